"""Portal links: shapes."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing_gateway.platform.schemas import UtcDateTime

RETURN_URL = (r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?"
              r"(?:[/?#][!-~]*)?$")


class PortalSessionRequest(Schema):
    """A link to the billing page for one member's browser."""

    org_id = fields.UUID(data_key="orgId", metadata={"description": "Admin and service only."})
    # Shown on the page as "Back": http(s) only, so it can never be a javascript: link; an
    # ASCII host and printable ASCII after it, so the page writes it as it came. One regex,
    # documented as the field's pattern: what /openapi.json allows is exactly what passes.
    return_url = fields.String(
        data_key="returnUrl",
        validate=[validate.Length(max=2048), validate.Regexp(
            RETURN_URL, error="Must be an http or https URL (https://app.example.com/...).")],
        metadata={"example": "https://app.example.com/settings",
                  "description": "Where the page's back link leads (http or https)."})


class PortalSessionResponse(Schema):
    """The link; it works once, until expiresAt."""

    url = fields.String(required=True, metadata={
        "example": "https://billing.example.com/billing/portal/3q2-7wEj..."})
    expires_at = UtcDateTime(data_key="expiresAt", required=True)
