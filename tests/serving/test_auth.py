"""Creator tokens (pure functions): round trip, expiry boundary, wrong secret, and any tampering is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.auth import TokenError, sign_creator_token, verify_creator_token

SECRET = "a-test-secret-that-is-long-enough-0123"
NOW = 1_800_000_000.0


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(payload: object, secret: str = SECRET) -> str:
    """A correctly signed token around any payload (to test what the signature alone does not catch)."""
    body = b64(json.dumps(payload).encode())
    return f"{body}.{b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())}"


def reason(secret: str, token: object, now: float = NOW) -> str:
    with pytest.raises(TokenError) as info:
        verify_creator_token(secret, token, now=now)
    assert str(info.value) == f"creator token refused: {info.value.reason}"  # never echoes the token
    return info.value.reason


def test_round_trip_returns_the_creator():
    token = sign_creator_token(SECRET, "creator-7", ttl_s=3600, now=NOW)
    assert verify_creator_token(SECRET, token, now=NOW) == "creator-7"
    assert "=" not in token and token.count(".") == 1


@given(creator=st.text(min_size=1, max_size=60))
def test_any_creator_id_round_trips(creator):
    assert verify_creator_token(SECRET, sign_creator_token(SECRET, creator, 60, now=NOW), now=NOW) == creator


def test_expiry_boundary():
    token = sign_creator_token(SECRET, "c1", ttl_s=100, now=NOW)
    assert verify_creator_token(SECRET, token, now=NOW + 99.999) == "c1"
    assert reason(SECRET, token, now=NOW + 100) == "expired"
    assert reason(SECRET, token, now=NOW + 10**9) == "expired"


def test_wrong_secret_is_a_bad_signature():
    token = sign_creator_token(SECRET, "c1", ttl_s=100, now=NOW)
    assert reason(SECRET + "x", token) == "bad signature"
    assert reason("other", token) == "bad signature"


def test_signature_is_checked_before_expiry():
    token = sign_creator_token("other", "c1", ttl_s=1, now=0)
    assert reason(SECRET, token) == "bad signature"


@settings(max_examples=300)
@given(data=st.data())
def test_any_changed_character_is_refused(data):
    token = sign_creator_token(SECRET, data.draw(st.text(min_size=1, max_size=20)), ttl_s=3600, now=NOW)
    index = data.draw(st.integers(0, len(token) - 1))
    new = data.draw(st.characters(codec="ascii").filter(lambda c: c != token[index]))
    tampered = token[:index] + new + token[index + 1:]
    assert reason(SECRET, tampered) in {"malformed", "bad signature"}


@settings(max_examples=300)
@given(data=st.data())
def test_any_changed_byte_of_payload_or_signature_is_refused(data):
    token = sign_creator_token(SECRET, "c1", ttl_s=3600, now=NOW)
    part = data.draw(st.sampled_from([0, 1]))
    pieces = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(pieces[part] + "=" * (-len(pieces[part]) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    pieces[part] = b64(bytes(raw))
    assert reason(SECRET, ".".join(pieces)) == "bad signature"


@given(junk=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_junk_is_malformed_or_bad_signature(junk):
    assert reason(SECRET, junk) in {"malformed", "bad signature"}


@pytest.mark.parametrize("token", [
    "", ".", "abc", "a.b.c", "abc.", ".abc", "eyJ9.eyJ9=", "ey J9.abc", "a" * 5000, None, 42, b"bytes.token",
])
def test_malformed_shapes(token):
    assert reason(SECRET, token) == "malformed"


def test_padding_and_other_spellings_are_malformed():
    body, signature = sign_creator_token(SECRET, "c1", ttl_s=60, now=NOW).split(".")
    assert reason(SECRET, f"{body}.{signature}=") == "malformed"
    assert reason(SECRET, f"{body}=.{signature}") in {"malformed"}
    standard = base64.b64encode(base64.urlsafe_b64decode(signature + "=")).decode().rstrip("=")
    if standard != signature:  # '+' and '/' are not base64url
        assert reason(SECRET, f"{body}.{standard}") == "malformed"
    spare = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = spare[spare.index(signature[-1]) ^ 1]  # flips a spare bit: same bytes, other spelling
    assert reason(SECRET, f"{body}.{signature[:-1]}{last}") == "malformed"


@pytest.mark.parametrize("payload", [
    ["c1"], "c1", 7, None,
    {"sub": "c1", "exp": NOW + 60},  # no version
    {"sub": "c1", "iat": 1, "exp": int(NOW) + 60, "v": 2},
    {"sub": "", "iat": 1, "exp": int(NOW) + 60, "v": 1},
    {"sub": 7, "iat": 1, "exp": int(NOW) + 60, "v": 1},
    {"sub": "c1", "iat": 1, "exp": "never", "v": 1},
    {"sub": "c1", "iat": 1, "exp": True, "v": 1},
    {"sub": "c1", "iat": 1, "exp": NOW + 60.5, "v": 1},
    {"sub": "c1", "iat": 1, "exp": int(NOW) + 60, "v": 1, "alg": "none"},
    {"sub": "c1", "iat": 1, "exp": int(NOW) + 60, "v": 1, "admin": True},
])
def test_signed_but_unexpected_payloads_are_malformed(payload):
    assert reason(SECRET, forge(payload)) == "malformed"


def test_signed_payload_that_is_not_json_is_malformed():
    body = b64(b"\xff\xfe not json")
    token = f"{body}.{b64(hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest())}"
    assert reason(SECRET, token) == "malformed"


def test_jwt_style_alg_none_is_refused():
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "c1", "iat": 1, "exp": int(NOW) + 60, "v": 1}).encode())
    assert reason(SECRET, f"{header}.{body}.") == "malformed"
    assert reason(SECRET, f"{body}.") == "malformed"


@pytest.mark.parametrize(("secret", "creator", "ttl"), [("", "c1", 60), (SECRET, "", 60), (SECRET, "c1", 0),
                                                       (SECRET, "c1", -5)])
def test_signing_refuses_bad_arguments(secret, creator, ttl):
    with pytest.raises(ValueError, match="secret|creator_id|ttl_s"):
        sign_creator_token(secret, creator, ttl, now=NOW)


def test_verifying_with_an_empty_secret_is_an_error():
    with pytest.raises(ValueError, match="secret"):
        verify_creator_token("", sign_creator_token(SECRET, "c1", 60, now=NOW), now=NOW)
