"""Bearer-token checks exactly as the reference's golang-jwt v5 ``jwt.Parse``, with its words.

The reference strips the first literal ``Bearer`` from the header and trims whitespace, then
parses: three segments, each unpadded base64url (padding is refused), a JSON header and JSON
claims, ``alg`` present and known, the signature decoded, the key function refusing anything
but HS256, the HMAC compared in constant time, then ``exp``/``nbf`` checked when present (never
``iat``, ``aud``, ``iss``, ``sub``). Each failure is golang-jwt's error text, prefixed as the
reference prefixes it. No error text ever contains the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from copy_offload.client import wire

_VERIFIED_CACHE = 256
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# golang-jwt's registered signing methods: a known alg other than HS256 fails in the key function.
_KNOWN_ALGS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
               "ES256", "ES384", "ES512", "EdDSA", "none"}
_ASCII_SPACES = "\t\n\v\f\r "
_GO_SPACES = _ASCII_SPACES + "\x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) \
    + "\u2028\u2029\u202f\u205f\u3000"  # Go's unicode.IsSpace
MALFORMED = "token is malformed: "
UNVERIFIABLE = "token is unverifiable: "
INVALID_CLAIMS = "token has invalid claims: "


class TokenRejected(Exception):
    """The request's token is missing or does not verify; ``str()`` is the 401 body text."""


class TokenVerifier:
    """Verifies bearer tokens against the HMAC secret (the DER bytes of the token key)."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock  # wall-clock seconds, as exp/nbf count them (tests pass their own)
        # Digest of tokens already verified -> their exp (None: none): a job's client repeats the
        # same token on every call. A cached token is checked again once its exp has passed.
        self._verified: OrderedDict[bytes, Optional[float]] = OrderedDict()

    def check_header(self, header: Optional[str]) -> None:
        if not header:
            raise TokenRejected(wire.ERR_UNAUTHORIZED)
        spaces = _GO_SPACES
        try:  # HTTP hands us latin-1; Go trims Unicode spaces (U+00A0 too) from valid UTF-8 only
            header = header.encode("latin-1").decode("utf-8")
        except UnicodeError:
            spaces = _ASCII_SPACES
        token = header.replace(wire.BEARER, "", 1).strip(spaces)
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        if digest in self._verified:
            expiry = self._verified[digest]
            if expiry is None or self._clock() < expiry:
                self._verified.move_to_end(digest)
                return
            del self._verified[digest]  # its exp has passed: the full check below says so
        claims = self._verify(token)
        exp = claims.get("exp")
        self._verified[digest] = float(exp) if isinstance(exp, (int, float)) else None
        if len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)

    def _verify(self, token: str) -> Dict[str, Any]:
        return parse(token, self._secret, self._clock())


def _reject(text: str) -> TokenRejected:
    return TokenRejected(wire.ERR_TOKEN_PREFIX + text)


def decode_segment(segment: str) -> bytes:
    """Go's ``base64.RawURLEncoding.DecodeString``; raises ValueError with Go's text."""
    data = segment.encode("utf-8", "surrogateescape")
    kept = bytearray()
    last = 0
    for index, byte in enumerate(data):
        if byte in (0x0A, 0x0D):  # Go's decoder skips newlines
            continue
        if byte not in _B64URL:
            raise ValueError("illegal base64 data at input byte %d" % index)
        kept.append(byte)
        last = index
    if len(kept) % 4 == 1:
        raise ValueError("illegal base64 data at input byte %d" % last)
    return base64.urlsafe_b64decode(bytes(kept) + b"=" * (-len(kept) % 4))


def _json_object(data: bytes, go_type: str) -> Optional[Dict[str, Any]]:
    """``json.Unmarshal`` into a Go map: None for ``null``; raises ValueError with Go's text."""
    value = wire.go_unmarshal(data)
    if value is None or isinstance(value, dict):
        return value
    raise ValueError("json: cannot unmarshal %s into Go value of type %s" % (wire.json_kind(value), go_type))


def _segment_object(segment: str, what: str, go_type: str) -> Dict[str, Any]:
    """A token's header or claims segment: base64url, then a JSON object (``null``: empty)."""
    try:
        data = decode_segment(segment)
    except ValueError as exc:
        raise _reject(MALFORMED + "could not base64 decode %s: %s" % (what, exc)) from None
    try:
        return _json_object(data, go_type) or {}
    except ValueError as exc:
        raise _reject(MALFORMED + "could not JSON decode %s: %s" % (what, exc)) from None


def parse(token: str, secret: bytes, now: Optional[float] = None) -> Dict[str, Any]:
    """golang-jwt v5 ``Parse`` with the reference's key function; the claims, or TokenRejected.
    ``now``: the wall-clock time exp/nbf are judged at (default: the present)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise _reject(MALFORMED + "token contains an invalid number of segments")
    header = _segment_object(parts[0], "header", "map[string]interface {}")
    claims = _segment_object(parts[1], "claim", "jwt.MapClaims")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _reject(UNVERIFIABLE + "signing method (alg) is unspecified")
    if alg not in _KNOWN_ALGS:
        raise _reject(UNVERIFIABLE + "signing method (alg) is unavailable")
    try:
        signature = decode_segment(parts[2])
    except ValueError as exc:
        raise _reject(MALFORMED + "could not base64 decode signature: %s" % exc) from None
    if alg != "HS256":
        raise _reject(UNVERIFIABLE + "error while executing keyfunc: unexpected signing method")
    signed = ("%s.%s" % (parts[0], parts[1])).encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(signature, hmac.new(secret, signed, hashlib.sha256).digest()):
        raise _reject("token signature is invalid: signature is invalid")
    problems = _claim_problems(claims, time.time() if now is None else now)
    if problems:
        raise _reject(INVALID_CLAIMS + ", ".join(problems))
    return claims


def _claim_problems(claims: Dict[str, Any], now: float) -> List[str]:
    """golang-jwt's validator for MapClaims: ``exp`` then ``nbf``, each when present."""
    problems = []
    for key, bad in (("exp", "token is expired"), ("nbf", "token is not valid yet")):
        if key not in claims:
            continue
        value = claims[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append("invalid type for claim: %s is invalid" % key)
            continue
        if value == 0:
            continue  # golang-jwt reads 0 as absent
        seconds = math.floor(value) if value >= 0 else math.ceil(value)  # Modf, then Truncate(Second)
        if (key == "exp" and not now < seconds) or (key == "nbf" and now < seconds):
            problems.append(bad)
    return problems
