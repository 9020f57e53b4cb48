"""Bearer-token checks with the reference's rules and golang-jwt's error words.

The reference strips the first literal ``Bearer`` from the header and trims whitespace, accepts
only HS256, checks ``exp``/``nbf`` only when present and never ``iat``. Clients and tests match on
the golang-jwt v5 texts (``signature is invalid``, ``unexpected signing method``, ``token is
malformed``), so the pyjwt exceptions are translated to them here, in one place. No error text
ever contains the token.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Dict, Optional

import jwt
from copy_offload.client import wire

_VERIFIED_CACHE = 256


class TokenRejected(Exception):
    """The request's token is missing or does not verify; ``str()`` is the 401 body text."""


class TokenVerifier:
    """Verifies bearer tokens against the HMAC secret (the DER bytes of the token key)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        # Digest of tokens already verified -> their exp (None: none): a job's client repeats the
        # same token on every call. A cached token is checked again once its exp has passed.
        self._verified: OrderedDict[bytes, Optional[float]] = OrderedDict()

    def check_header(self, header: Optional[str]) -> None:
        if not header:
            raise TokenRejected(wire.ERR_UNAUTHORIZED)
        try:  # HTTP hands us latin-1; Go trims Unicode spaces (U+00A0 too) from the UTF-8 text
            header = header.encode("latin-1").decode("utf-8")
        except UnicodeError:
            pass
        token = header.replace(wire.BEARER, "", 1).strip()
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        if digest in self._verified:
            expiry = self._verified[digest]
            if expiry is None or time.time() < expiry:
                self._verified.move_to_end(digest)
                return
            del self._verified[digest]  # its exp has passed: the full check below says so
        claims = self._verify(token)
        exp = claims.get("exp")
        self._verified[digest] = float(exp) if isinstance(exp, (int, float)) else None
        if len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)

    def _verify(self, token: str) -> Dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"verify_iat": False, "verify_aud": False, "verify_iss": False, "verify_sub": False},
            )
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(
                wire.ERR_TOKEN_PREFIX + "token is unverifiable: error while executing keyfunc: unexpected signing method"
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenRejected(wire.ERR_TOKEN_PREFIX + "token signature is invalid: signature is invalid") from None
        except jwt.ExpiredSignatureError:
            raise TokenRejected(wire.ERR_TOKEN_PREFIX + "token has invalid claims: token is expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected(wire.ERR_TOKEN_PREFIX + "token has invalid claims: token is not valid yet") from None
        except jwt.DecodeError as exc:
            raise TokenRejected(wire.ERR_TOKEN_PREFIX + "token is malformed: " + _malformed(str(exc))) from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(wire.ERR_TOKEN_PREFIX + "token has invalid claims: " + _safe(str(exc))) from None
        except Exception as exc:  # pyjwt may raise others on hostile input; never a 500
            raise TokenRejected(wire.ERR_TOKEN_PREFIX + "token is malformed: " + type(exc).__name__) from None


def _malformed(text: str) -> str:
    if "segments" in text:
        return "token contains an invalid number of segments"
    if "padding" in text or "base64" in text.lower():
        return "could not base64 decode token: " + _safe(text)
    return _safe(text)


def _safe(text: str) -> str:
    """pyjwt's texts name no key or token; cut them short anyway."""
    return text.splitlines()[0][:200] if text else "invalid token"
