"""JWT roles (member, admin, service) and which organization a caller may act on."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import jwt
from flask import Flask, current_app, g
from flask_jwt_extended import JWTManager, get_jwt, verify_jwt_in_request

from billing_gateway.platform.config import Settings
from billing_gateway.platform.errors import (
    Forbidden,
    Unauthorized,
    ValidationFailed,
    error_response,
)

MEMBER, ADMIN, SERVICE = "member", "admin", "service"
ROLES = (MEMBER, ADMIN, SERVICE)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's subject, role and organization."""

    subject: str
    role: str
    org_id: uuid.UUID | None


def _claim(claims: dict[str, Any], path: str) -> Any:
    """Read a claim by name, or by dotted path for nested claims (app_metadata.role)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def caller_from_claims(claims: dict[str, Any], settings: Settings) -> Caller:
    """Build the caller from verified claims; a malformed org or role claim is 401."""
    role = _claim(claims, settings.jwt_role_claim)
    if role is None:
        role = MEMBER
    if not isinstance(role, str):
        raise Unauthorized("The token's role claim is not a string")
    raw_org = _claim(claims, settings.jwt_org_claim)
    org_id = None
    if raw_org is not None:
        try:
            org_id = uuid.UUID(str(raw_org))
        except ValueError as exc:
            raise Unauthorized("The token's organization claim is not a UUID") from exc
    return Caller(subject=str(claims["sub"]), role=role, org_id=org_id)


def current_caller() -> Caller:
    """Return the verified caller of this request."""
    if "caller" not in g:
        g.caller = caller_from_claims(get_jwt(), current_app.config["BILLING_SETTINGS"])
    caller: Caller = g.caller
    return caller


def require_role(*roles: str) -> Callable[[F], F]:
    """Let only callers with a valid token and one of `roles` into the view."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if "caller" not in g:
                # Not verified yet in this request (the rate limiter may have done it).
                verify_jwt_in_request()
            caller = current_caller()
            if caller.role not in roles:
                raise Forbidden(f"Role {caller.role!r} may not do this")
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def resolve_org(caller: Caller, requested: uuid.UUID | None) -> uuid.UUID:
    """Return the org this request acts on: a member's own, or the one an admin/service names."""
    if caller.role == MEMBER:
        if caller.org_id is None:
            raise Forbidden("The token names no organization")
        if requested is not None and requested != caller.org_id:
            raise Forbidden("Members may only act on their own organization")
        org_id: uuid.UUID | None = caller.org_id
    else:
        org_id = requested or caller.org_id
    if org_id is None:
        raise ValidationFailed(
            "orgId is required", fields={"orgId": ["Required for this role."]}
        )
    g.org_id = org_id  # the org of this request's log lines (platform/logs.py)
    return org_id


def _unauthorized(message: str) -> Any:
    return error_response(401, "unauthorized", message)


def init_app(app: Flask, settings: Settings) -> None:
    """Configure flask-jwt-extended and make every token failure a JSON 401."""
    app.config.update(
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ALGORITHM=settings.jwt_algorithm,
        # Only the configured algorithm is accepted: alg=none and HS/RS confusion fail.
        JWT_DECODE_ALGORITHMS=[settings.jwt_algorithm],
        JWT_SECRET_KEY=settings.jwt_secret,
        JWT_PUBLIC_KEY=settings.jwt_public_key,
        JWT_DECODE_AUDIENCE=settings.jwt_audience,
        JWT_DECODE_ISSUER=settings.jwt_issuer,
        JWT_IDENTITY_CLAIM="sub",
        JWT_DECODE_LEEWAY=30,
    )
    manager = JWTManager(app)

    # flask-jwt-extended answers 401/422 with its own body by default; the contract wants
    # one JSON shape and 401 for every unusable token.
    manager.unauthorized_loader(lambda reason: _unauthorized("Missing or malformed bearer token"))
    manager.invalid_token_loader(lambda reason: _unauthorized(f"Invalid token: {reason}"))
    manager.expired_token_loader(lambda header, data: _unauthorized("Token has expired"))
    manager.revoked_token_loader(lambda header, data: _unauthorized("Token has been revoked"))
    manager.needs_fresh_token_loader(lambda header, data: _unauthorized("Fresh token required"))
    manager.token_verification_failed_loader(
        lambda header, data: _unauthorized("Token has no expiry (exp claim)")
    )
    # PyJWT verifies exp only when present; the contract requires it.
    manager.token_verification_loader(lambda header, data: "exp" in data)


def issue_token(
    settings: Settings,
    *,
    org_id: uuid.UUID | None,
    role: str,
    subject: str,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
) -> str:
    """Sign a development token with the HS256 secret (for `billing-gateway token`)."""
    if settings.jwt_algorithm != "HS256" or not settings.jwt_secret:
        raise ValueError("tokens can only be issued with an HS256 secret")
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + lifetime}
    claims[settings.jwt_role_claim] = role
    if org_id is not None:
        claims[settings.jwt_org_claim] = str(org_id)
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
