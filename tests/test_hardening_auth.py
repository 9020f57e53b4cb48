"""The bearer-token check under hostile input, in process: only ``TokenRejected``, never the token.

Also the two properties a review of server/auth.py rests on: a token with ``exp`` is refused
once it has expired even though it was accepted (and cached) before, and the signature is
compared in constant time (pyjwt's HMAC verify is ``hmac.compare_digest``). The verified-token
cache is keyed by the SHA-256 of the token: a lookup's timing can at most tell an attacker about
a digest, never about the key or a valid token.
"""

from __future__ import annotations

import inspect
import time

import jwt
import pytest
from copy_offload.client import wire
from copy_offload.server import pki
from copy_offload.server.auth import TokenRejected, TokenVerifier
from hypothesis import given, settings
from hypothesis import strategies as st

SECRET = pki.pem_der(pki.generate_token_key_pem())
TOKEN = pki.mint_token(SECRET)


def rejection(verifier: TokenVerifier, header: str) -> str:
    with pytest.raises(TokenRejected) as info:
        verifier.check_header(header)
    return str(info.value)


def test_expired_token_is_refused_after_being_cached():
    now = [time.time()]
    verifier = TokenVerifier(SECRET, clock=lambda: now[0])
    token = jwt.encode({"sub": "user-container", "exp": now[0] + 1.0}, SECRET, algorithm="HS256")
    verifier.check_header("Bearer " + token)
    verifier.check_header("Bearer " + token)  # served from the cache
    now[0] += 1.1  # the verifier's clock, not the test's wall clock
    assert rejection(verifier, "Bearer " + token) == wire.ERR_TOKEN_PREFIX + "token has invalid claims: token is expired"
    verifier.check_header("Bearer " + TOKEN)  # a token without exp stays good


def test_valid_token_variants_and_cache_bound():
    verifier = TokenVerifier(SECRET)
    for header in ("Bearer " + TOKEN, TOKEN, "Bearer \t%s  " % TOKEN):
        verifier.check_header(header)
    for i in range(600):  # more than the cache holds: it stays bounded and keeps working
        verifier.check_header("Bearer " + pki.mint_token(SECRET, issued_at=i))
    assert len(verifier._verified) <= 256
    verifier.check_header("Bearer " + TOKEN)


def test_signature_comparison_is_constant_time():
    """pyjwt compares HMAC signatures with ``hmac.compare_digest``; guard against a change."""
    source = inspect.getsource(jwt.algorithms.HMACAlgorithm.verify)
    assert "compare_digest" in source, source
    verifier = TokenVerifier(SECRET)
    header, payload, _ = TOKEN.split(".")
    forged = "%s.%s.%s" % (header, payload, jwt.utils.base64url_encode(b"\0" * 32).decode())
    assert "signature is invalid" in rejection(verifier, "Bearer " + forged)


header_chars = st.characters(min_codepoint=0x20, max_codepoint=0xFF)


@given(header=st.text(alphabet=header_chars, max_size=200)
       | st.builds(lambda a, b: a + TOKEN + b, st.text(alphabet=header_chars, max_size=8),
                   st.text(alphabet=header_chars, max_size=8))
       | st.lists(st.text(alphabet=header_chars, max_size=40), min_size=1, max_size=5).map(".".join))
@settings(max_examples=500, deadline=None, database=None)
def test_hostile_headers_only_raise_token_rejected(header):
    verifier = TokenVerifier(SECRET)
    try:
        verifier.check_header(header)
    except TokenRejected as exc:
        text = str(exc)
        assert text == wire.ERR_UNAUTHORIZED or text.startswith(wire.ERR_TOKEN_PREFIX), text
        assert text.isprintable() and "\n" not in text
        token = header.replace("Bearer", "", 1).strip()
        if len(token) >= 12:
            assert token not in text
        assert TOKEN[-16:] not in text
        return
    assert header.replace("Bearer", "", 1).strip() == TOKEN


def _parts(token: str):
    return token.split(".")


@pytest.mark.parametrize("make, text", [
    (lambda t: t + "=", "token is malformed: could not base64 decode signature: illegal base64 data at input byte 43"),
    (lambda t: "%s=.%s.%s" % tuple(_parts(t)), "token is malformed: could not base64 decode header: illegal base64 "
     "data at input byte 36"),
    (lambda t: t + ".x", "token is malformed: token contains an invalid number of segments"),
    (lambda t: "!" + t, "token is malformed: could not base64 decode header: illegal base64 data at input byte 0"),
    (lambda t: "e30.%s.%s" % tuple(_parts(t)[1:]), "token is unverifiable: signing method (alg) is unspecified"),
    (lambda t: "eyJhbGciOiJYIn0.%s.%s" % tuple(_parts(t)[1:]), "token is unverifiable: signing method (alg) is "
     "unavailable"),
    (lambda t: "bm90IGpzb24.%s.%s" % tuple(_parts(t)[1:]), "token is malformed: could not JSON decode header: "
     "invalid character 'o' in literal null (expecting 'u')"),
    (lambda t: "%s.WzFd.%s" % (_parts(t)[0], _parts(t)[2]), "token is malformed: could not JSON decode claim: "
     "json: cannot unmarshal array into Go value of type jwt.MapClaims"),
    (lambda t: jwt.encode({"exp": "soon", "nbf": "x"}, SECRET, algorithm="HS256"),
     "token has invalid claims: invalid type for claim: exp is invalid, invalid type for claim: nbf is invalid"),
    (lambda t: jwt.encode({"exp": 1}, SECRET, algorithm="HS512"),
     "token is unverifiable: error while executing keyfunc: unexpected signing method"),
], ids=["padded-signature", "padded-header", "four-segments", "bad-base64", "no-alg", "unknown-alg", "header-not-json",
        "claims-array", "claim-types", "hs512"])
def test_golang_jwt_v5_texts(make, text):
    """golang-jwt v5's parser and words, as the reference answers (padding refused, unlike pyjwt)."""
    assert rejection(TokenVerifier(SECRET), "Bearer " + make(TOKEN)) == wire.ERR_TOKEN_PREFIX + text


def test_null_claims_are_accepted_as_golang_jwt_does():
    head = TOKEN.split(".")[0]
    import base64
    import hashlib
    import hmac

    signature = base64.urlsafe_b64encode(hmac.new(SECRET, ("%s.bnVsbA" % head).encode(), hashlib.sha256).digest())
    TokenVerifier(SECRET).check_header("Bearer %s.bnVsbA.%s" % (head, signature.rstrip(b"=").decode()))
