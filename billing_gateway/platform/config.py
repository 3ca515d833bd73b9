"""Settings from the environment, read and validated in one place."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from billing_gateway.platform.money import (
    LEDGER_PLACES,
    AmountError,
    currency_exponent,
    parse_decimal_text,
    parse_whole_number,
)

DEV_SECRET_FILE = "jwt-secret"  # noqa: S105  # a file name, not a secret
DEV_SESSION_SECRET_FILE = "session-secret"  # noqa: S105  # a file name, not a secret
MIN_SECRET_LENGTH = 32


class ConfigError(Exception):
    """A setting is missing or invalid; start-up stops with this message."""


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    database_url: str | None = None
    data_dir: Path = Path(".billing-gateway")
    environment: str = "development"
    jwt_secret: str | None = None
    jwt_secret_is_dev: bool = False
    jwt_algorithm: str = "HS256"
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_org_claim: str = "org_id"
    jwt_role_claim: str = "role"
    currency: str = "usd"
    public_url: str = "http://localhost:8000"
    stripe_secret_key: str | None = None
    stripe_webhook_secrets: tuple[str, ...] = ()
    stripe_api_base: str | None = None
    min_topup: Decimal = Decimal("5.00")
    max_topup: Decimal = Decimal("10000.00")
    default_sms_price: Decimal = Decimal("0.0075")
    rate_limit: str = "300/minute"
    ratelimit_storage_uri: str = "memory://"
    pool_min_size: int = 1
    pool_max_size: int = 10
    # How long a request waits for a pooled connection before answering 503 + Retry-After.
    pool_timeout: float = 2.0
    max_content_length: int = 1024 * 1024
    # Stripe calls: a short timeout and few retries, so a slow Stripe answers within seconds.
    stripe_timeout: float = 5.0
    stripe_max_retries: int = 1
    # Requests waiting on Stripe at once, per worker process; beyond it 503 + Retry-After,
    # so a slow Stripe can never take every thread from charges and balance reads.
    stripe_concurrency: int = 2
    # Reverse proxies in front of the service whose X-Forwarded-For is trusted (ProxyFix).
    trusted_proxies: int = 0
    # The customer page: signs its cookie and CSRF tokens (every process the same).
    session_secret: str | None = None
    # Who may frame the page (CSP frame-ancestors): 'none', or the platform's origins.
    frame_ancestors: str = "'none'"
    # Where Checkout Sessions send the browser; the page's forms may lead only there.
    checkout_origin: str = "https://checkout.stripe.com"
    low_balance_default: Decimal = Decimal("5.00")
    # A portal link opens a session within this many seconds, once.
    portal_link_ttl: int = 300
    # A page session left unused this many seconds has ended.
    portal_idle_timeout: int = 1800
    # Alert emails: smtp://host:port or smtps://host:port (None: no emails), and their sender.
    smtp_url: str | None = None
    email_from: str = "billing@localhost"
    # Webhook receivers on private or loopback addresses (SSRF): refused unless allowed.
    webhook_allow_private: bool = False
    # Deliveries one worker process attempts at once.
    worker_threads: int = 4

    @property
    def is_production(self) -> bool:
        """Tell whether the deployment declared itself production."""
        return self.environment == "production"

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some settings replaced (tests, the embedded server)."""
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass kwargs


def _decimal(env: Mapping[str, str], name: str, default: str) -> Decimal:
    raw = env.get(name, default)
    try:
        value = parse_decimal_text(raw.strip())
    except AmountError as exc:
        raise ConfigError(f"{name}={raw!r} is not a decimal number") from exc
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive number")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = parse_whole_number(raw.strip())
    except AmountError as exc:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from exc
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(parse_decimal_text(raw.strip()))
    except AmountError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from exc
    if not 0 < value <= 600:
        raise ConfigError(f"{name}={raw!r} must be between 0 and 600 seconds")
    return value


def dev_secret(data_dir: Path, name: str = DEV_SECRET_FILE) -> str:
    """Return this checkout's development secret (JWT by default), creating it on first use.

    It is random per data directory (never a well-known string), so a dev deployment
    that escapes to a network cannot be forged from public knowledge.
    """
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def derived_session_secret(jwt_secret: str | None) -> str:
    """A signing key for the page derived from the HS256 JWT secret (HMAC with a label)."""
    if not jwt_secret:
        raise ConfigError("BILLING_SESSION_SECRET is not set and there is no JWT secret to "
                          "derive one from")
    return hmac.new(jwt_secret.encode(), b"billing-gateway portal session",
                    hashlib.sha256).hexdigest()


def _session_secret(env: Mapping[str, str], environment: str, data_dir: Path,
                    jwt_secret: str | None) -> str:
    """The page's signing secret: BILLING_SESSION_SECRET, else one derived from the HS256
    JWT secret (a separate key, so neither signature can stand in for the other), else a
    development file; required in production when neither is set."""
    secret = env.get("BILLING_SESSION_SECRET")
    if secret:
        if len(secret) < MIN_SECRET_LENGTH and environment == "production":
            raise ConfigError(
                f"BILLING_SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return secret
    if jwt_secret:
        return derived_session_secret(jwt_secret)
    if environment == "production":
        raise ConfigError("BILLING_SESSION_SECRET is required when BILLING_ENV=production "
                          "and the JWT is not HS256")
    return dev_secret(data_dir, DEV_SESSION_SECRET_FILE)


def _frame_ancestors(env: Mapping[str, str]) -> str:
    """BILLING_FRAME_ANCESTORS: 'none', 'self' or space-separated https origins."""
    raw = env.get("BILLING_FRAME_ANCESTORS", "'none'").strip() or "'none'"
    for source in raw.split():
        if source in ("'none'", "'self'"):
            continue
        parsed = urlsplit(source)
        if parsed.scheme not in ("https", "http") or not parsed.netloc or parsed.path not in (
                "", "/") or parsed.query or parsed.fragment or ";" in source or "," in source:
            raise ConfigError(f"BILLING_FRAME_ANCESTORS: {source!r} is not an origin "
                              "(https://dashboard.example.com), 'self' or 'none'")
    return raw


def _origin(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, default).strip()
    parsed = urlsplit(raw)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise ConfigError(f"{name}={raw!r} is not an origin (https://host[:port])")
    return f"{parsed.scheme}://{parsed.netloc}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError with a readable message."""
    env = os.environ if env is None else env
    environment = env.get("BILLING_ENV", "development").strip().lower()
    if environment not in ("development", "production", "test"):
        raise ConfigError(f"BILLING_ENV={environment!r}: use development, production or test")
    data_dir = Path(env.get("BILLING_DATA_DIR", ".billing-gateway"))

    algorithm = env.get("BILLING_JWT_ALGORITHM", "HS256").upper()
    if algorithm not in ("HS256", "RS256", "ES256"):
        raise ConfigError(f"BILLING_JWT_ALGORITHM={algorithm!r}: use HS256, RS256 or ES256")
    public_key = env.get("BILLING_JWT_PUBLIC_KEY")
    secret = env.get("BILLING_JWT_SECRET")
    secret_is_dev = False
    if algorithm == "HS256":
        if not secret:
            if environment == "production":
                raise ConfigError("BILLING_JWT_SECRET is required when BILLING_ENV=production")
            secret = dev_secret(data_dir)
            secret_is_dev = True
        elif len(secret) < MIN_SECRET_LENGTH and environment == "production":
            raise ConfigError(f"BILLING_JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    elif not public_key:
        raise ConfigError(f"BILLING_JWT_PUBLIC_KEY is required with {algorithm}")

    currency = env.get("BILLING_CURRENCY", "usd").strip().lower()
    if len(currency) != 3 or not currency.isalpha():
        raise ConfigError(f"BILLING_CURRENCY={currency!r} is not an ISO 4217 code")
    if currency_exponent(currency) > LEDGER_PLACES:
        raise ConfigError(f"BILLING_CURRENCY={currency!r} has more decimals than the ledger keeps")

    min_topup = _decimal(env, "BILLING_MIN_TOPUP", "5.00")
    max_topup = _decimal(env, "BILLING_MAX_TOPUP", "10000.00")
    if min_topup > max_topup:
        raise ConfigError("BILLING_MIN_TOPUP is larger than BILLING_MAX_TOPUP")

    webhook_secrets = tuple(
        s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip()
    )
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        data_dir=data_dir,
        environment=environment,
        jwt_secret=secret,
        jwt_secret_is_dev=secret_is_dev,
        jwt_algorithm=algorithm,
        jwt_public_key=public_key,
        jwt_audience=env.get("BILLING_JWT_AUDIENCE") or None,
        jwt_issuer=env.get("BILLING_JWT_ISSUER") or None,
        jwt_org_claim=env.get("BILLING_JWT_ORG_CLAIM", "org_id"),
        jwt_role_claim=env.get("BILLING_JWT_ROLE_CLAIM", "role"),
        currency=currency,
        public_url=env.get("BILLING_PUBLIC_URL", "http://localhost:8000").rstrip("/"),
        stripe_secret_key=env.get("STRIPE_SECRET_KEY") or None,
        stripe_webhook_secrets=webhook_secrets,
        stripe_api_base=env.get("STRIPE_API_BASE") or None,
        min_topup=min_topup,
        max_topup=max_topup,
        default_sms_price=_decimal(env, "BILLING_DEFAULT_SMS_PRICE", "0.0075"),
        rate_limit=env.get("BILLING_RATE_LIMIT", "300/minute"),
        ratelimit_storage_uri=env.get("RATELIMIT_STORAGE_URI", "memory://"),
        pool_min_size=_int(env, "BILLING_DB_POOL_MIN", 1),
        pool_max_size=_int(env, "BILLING_DB_POOL_MAX", 10),
        pool_timeout=_seconds(env, "BILLING_DB_POOL_TIMEOUT", 2.0),
        stripe_timeout=_seconds(env, "STRIPE_TIMEOUT", 5.0),
        stripe_max_retries=_int(env, "STRIPE_MAX_RETRIES", 1, minimum=0),
        stripe_concurrency=_int(env, "BILLING_STRIPE_CONCURRENCY", 2),
        trusted_proxies=_int(env, "BILLING_TRUSTED_PROXIES", 0, minimum=0),
        session_secret=_session_secret(env, environment, data_dir, secret),
        frame_ancestors=_frame_ancestors(env),
        checkout_origin=_origin(env, "BILLING_CHECKOUT_ORIGIN", "https://checkout.stripe.com"),
        low_balance_default=_decimal(env, "BILLING_LOW_BALANCE_DEFAULT", "5.00"),
        portal_link_ttl=_int(env, "BILLING_PORTAL_LINK_TTL", 300, minimum=30),
        portal_idle_timeout=_int(env, "BILLING_PORTAL_IDLE_TIMEOUT", 1800, minimum=60),
        smtp_url=_smtp_url(env),
        email_from=env.get("BILLING_EMAIL_FROM", "billing@localhost"),
        webhook_allow_private=_flag(env, "BILLING_WEBHOOK_ALLOW_PRIVATE"),
        worker_threads=_int(env, "BILLING_WORKER_THREADS", 4),
    )


def _smtp_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("BILLING_SMTP_URL") or None
    if raw is not None and not raw.startswith(("smtp://", "smtps://")):
        raise ConfigError("BILLING_SMTP_URL must be smtp://host:port or smtps://host:port")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "false").strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise ConfigError(f"{name}={raw!r} must be true or false")
    return raw in ("true", "1")


def warn_if_dev_secret(settings: Settings) -> None:
    """Say loudly that tokens are signed with a development secret."""
    if settings.jwt_secret_is_dev:
        print(
            "WARNING: BILLING_JWT_SECRET is not set; using the development secret in "
            f"{settings.data_dir / DEV_SECRET_FILE}. Set BILLING_JWT_SECRET (and "
            "BILLING_ENV=production) before exposing this service.",
            file=sys.stderr,
        )
