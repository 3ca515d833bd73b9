"""Fixtures for the billing page: a browser-like client signed in through a portal link."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

# The worker's fixtures: the page's auto top-up tests run attempts as the worker does.
from tests.autotopup.conftest import run_worker, worker_stripe  # noqa: F401
from tests.plugins.service import TokenFactory

LINKS = "/api/billing/portal-sessions"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_ATTEMPT = re.compile(r'name="attempt" value="([^"]+)"')


def portal_link(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, **body: object) -> str:
    """Ask for a link as the org's member; return its path."""
    response = client.post(LINKS, headers=auth("member", org, subject=f"member-of-{org}"),
                           json=body)
    assert response.status_code == 201, response.get_json()
    url: str = response.get_json()["url"]
    return url[url.index("/billing/portal/"):]


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def attempt(html: str) -> str:
    """The add-funds form's attempt id."""
    match = _ATTEMPT.search(html)
    assert match
    return match.group(1)


SignIn = Callable[[uuid.UUID], FlaskClient]


@pytest.fixture
def sign_in(app, auth: TokenFactory) -> SignIn:  # type: ignore[no-untyped-def]  # app fixture
    """Return a fresh browser-like client signed in to an org's page by a portal link."""

    def browser(org: uuid.UUID) -> FlaskClient:
        browser_client = app.test_client()
        link = portal_link(app.test_client(), auth, org)
        opened = browser_client.get(link)
        assert opened.status_code == 303, opened.get_data(as_text=True)
        assert opened.headers["Location"] == "/billing"
        return browser_client

    return browser
