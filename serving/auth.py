"""Who may call what: app keys, the admin token, merchant tokens and signed creator tokens.

A creator token is `base64url(payload) "." base64url(HMAC-SHA256(secret, base64url(payload)))`, the payload
being the JSON object `{"sub": creator_id, "iat": issued, "exp": expires, "v": 1}` (epoch seconds), unpadded
base64url in its one canonical spelling. Errors never echo a token, a secret or another caller's id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from typing import Annotated, Literal

from fastapi import Depends, Header, HTTPException, Path, Query, Request
from pydantic import SecretStr

from serving.deps import get_settings, holder_of
from serving.model_source import LoadedModel
from serving.settings import PLACEHOLDER_SECRET, ServingSettings

log = logging.getLogger("serving.auth")

TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 2048  # longer is malformed, checked before any decoding
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_SIGNATURE_BYTES = hashlib.sha256().digest_size
TokenProblem = Literal["malformed", "bad signature", "expired"]
CHALLENGE = {"WWW-Authenticate": "Bearer"}


class TokenError(Exception):
    """A creator token was refused; `reason` is one of "malformed", "bad signature", "expired"."""

    def __init__(self, reason: TokenProblem) -> None:
        super().__init__(f"creator token refused: {reason}")
        self.reason: TokenProblem = reason


# ---------------------------------------------------------------- creator tokens (pure, no FastAPI)

def sign_creator_token(secret: str, creator_id: str, ttl_s: float, now: float | None = None) -> str:
    """A token that lets `creator_id` read their own stats for `ttl_s` seconds from `now`."""
    if not secret:
        raise ValueError("the token secret must be a non-empty string")
    if not isinstance(creator_id, str) or not creator_id:
        raise ValueError("creator_id must be a non-empty string")
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s}")
    issued = int(time.time() if now is None else now)
    payload = {"sub": creator_id, "iat": issued, "exp": issued + max(1, int(ttl_s)), "v": TOKEN_VERSION}
    body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode())
    return f"{body}.{_b64encode(_mac(secret, body))}"


def verify_creator_token(secret: str, token: str, now: float | None = None) -> str:
    """The creator id of a valid token; TokenError("malformed" | "bad signature" | "expired") otherwise."""
    if not secret:
        raise ValueError("the token secret must be a non-empty string")
    body, signature = _split(token)
    if not hmac.compare_digest(signature, _mac(secret, body)):
        raise TokenError("bad signature")
    creator_id, expires = _claims(_b64decode(body))
    if (time.time() if now is None else now) >= expires:
        raise TokenError("expired")
    return creator_id


def _mac(secret: str, body: str) -> bytes:
    """HMAC-SHA256 of the encoded payload."""
    return hmac.new(secret.encode(), body.encode("ascii"), hashlib.sha256).digest()


def _split(token: object) -> tuple[str, bytes]:
    """The encoded payload and the decoded signature; "malformed" unless exactly `b64.b64` canonical."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise TokenError("malformed")
    body, signature = token.split(".")
    raw = _b64decode(signature)
    _b64decode(body)
    if len(raw) != _SIGNATURE_BYTES:
        raise TokenError("malformed")
    return body, raw


def _claims(payload: bytes) -> tuple[str, int]:
    """(sub, exp) of a signed payload; "malformed" unless it is a version-1 object with those types."""
    try:
        claims = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise TokenError("malformed") from None
    if not isinstance(claims, dict) or claims.get("v") != TOKEN_VERSION or set(claims) != {"sub", "iat", "exp", "v"}:
        raise TokenError("malformed")
    sub, exp, iat = claims["sub"], claims["exp"], claims["iat"]
    if not isinstance(sub, str) or not sub or not _is_int(exp) or not _is_int(iat):
        raise TokenError("malformed")
    return sub, exp


def _is_int(value: object) -> bool:
    """A JSON integer (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _b64encode(raw: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Bytes of unpadded canonical base64url; "malformed" for padding, other characters or spare bits."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("malformed")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed") from None
    if _b64encode(raw) != text:  # non-zero spare bits: another spelling of the same bytes
        raise TokenError("malformed")
    return raw


# ---------------------------------------------------------------- FastAPI dependencies
# (async def: they never block, so FastAPI runs them inline instead of in its thread pool)

SettingsIn = Annotated[ServingSettings, Depends(get_settings)]
AuthorizationIn = Annotated[str | None, Header(include_in_schema=False)]


def bearer(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; None when absent, 401 for another scheme or shape."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise HTTPException(401, detail="malformed Authorization header: expected 'Bearer <token>'",
                            headers=CHALLENGE)
    return token


def matches(token: str, keys: Iterable[SecretStr | None]) -> bool:
    """Whether `token` equals one of `keys` (each compared in constant time, all of them compared)."""
    given, found = token.encode(), False
    for key in keys:
        if key is not None:
            found |= secrets.compare_digest(given, key.get_secret_value().encode())
    return found


def is_admin(settings: ServingSettings, token: str | None) -> bool:
    """Whether `token` is the admin token (False when there is none)."""
    return token is not None and matches(token, [settings.admin_token])


def app_routes_open(settings: ServingSettings) -> bool:
    """Whether the app routes (feed, events) take calls without a key: development with no app_keys."""
    return settings.environment == "development" and not settings.app_keys


def warn_if_open(settings: ServingSettings) -> None:
    """Log, once at startup, what is open or placeholder in development."""
    if app_routes_open(settings):
        log.warning("no FEED_SERVE_APP_KEYS: feed and event routes are open to anyone (development only)")
    if settings.token_secret.get_secret_value() == PLACEHOLDER_SECRET:
        log.warning("creator tokens are signed with the development placeholder: set FEED_SERVE_TOKEN_SECRET")


async def require_app(settings: SettingsIn, authorization: AuthorizationIn = None) -> None:
    """Feed and event routes: an app key or the admin token (open in development when no app key is set)."""
    if not app_routes_open(settings):
        _require_app_key(settings, bearer(authorization))


async def app_model(request: Request) -> LoadedModel:
    """The feed route's one dependency: `require_app`, then the model serving the request (read once, so a
    concurrent swap cannot split a request). One dependency instead of four, and the header read directly
    (`AuthorizationIn` is not in the schema either): FastAPI spends ~10–20 µs resolving each dependency or
    parameter, on the route every feed goes through."""
    settings = request.app.state.settings
    if not app_routes_open(settings):
        _require_app_key(settings, bearer(request.headers.get("authorization")))
    return holder_of(request).current


async def require_backend(settings: SettingsIn, authorization: AuthorizationIn = None) -> None:
    """Routes the app's backend calls (blocks): an app key or the admin token, in every environment."""
    _require_app_key(settings, bearer(authorization), merchants_forbidden=True)


def _require_app_key(settings: ServingSettings, token: str | None, merchants_forbidden: bool = False) -> None:
    """401 unless `token` is an app key or the admin token (403 for a merchant token, when asked)."""
    if token is None:
        raise HTTPException(401, detail="missing API key: send Authorization: Bearer <app key>", headers=CHALLENGE)
    if matches(token, [*settings.app_keys, settings.admin_token]):
        return
    if merchants_forbidden and matches(token, settings.merchant_tokens.values()):
        raise HTTPException(403, detail="this route needs an app key or the admin token, not a merchant token")
    raise HTTPException(401, detail="unknown API key", headers=CHALLENGE)


async def creator_access(creator_id: Annotated[str, Path()], settings: SettingsIn, authorization: AuthorizationIn = None,
                   token: Annotated[str | None, Query(include_in_schema=False)] = None) -> str:
    """The creator id when the caller is the admin or holds that creator's token (header, or ?token=)."""
    given = bearer(authorization)
    if is_admin(settings, given):
        return creator_id
    given = given if given is not None else (token or None)
    if given is None:
        raise HTTPException(401, detail="missing creator token: send Authorization: Bearer <token> or ?token=",
                            headers=CHALLENGE)
    try:
        subject = verify_creator_token(settings.token_secret.get_secret_value(), given)
    except TokenError as exc:
        raise HTTPException(401, detail=f"creator token refused: {exc.reason}", headers=CHALLENGE) from None
    if not secrets.compare_digest(subject.encode(), creator_id.encode()):
        raise HTTPException(403, detail="this token is for another creator")
    return creator_id


async def merchant_access(merchant_id: Annotated[str, Path()], settings: SettingsIn,
                    authorization: AuthorizationIn = None) -> str:
    """The merchant id when the caller is the admin or holds that merchant's token."""
    given = bearer(authorization)
    if given is None:
        raise HTTPException(401, detail="missing merchant token: send Authorization: Bearer <token>",
                            headers=CHALLENGE)
    if is_admin(settings, given):
        return merchant_id
    own = settings.merchant_tokens.get(merchant_id)
    if own is not None and matches(given, [own]):
        return merchant_id
    if matches(given, settings.merchant_tokens.values()):
        raise HTTPException(403, detail="this token is for another merchant")
    raise HTTPException(401, detail="unknown merchant token", headers=CHALLENGE)


AppDep = Annotated[None, Depends(require_app)]
AppModelDep = Annotated[LoadedModel, Depends(app_model)]
BackendDep = Annotated[None, Depends(require_backend)]
CreatorDep = Annotated[str, Depends(creator_access)]
MerchantDep = Annotated[str, Depends(merchant_access)]
