"""Go's ``http.ServeMux`` for the reference's six patterns: which route a target reaches.

The reference registers ``/hello``, ``/trial``, ``/list``, ``/shutdown`` and the subtrees
``/status/`` and ``/cancel/``. Go's mux works on the escaped path: it cleans it (``//``, ``.``,
``..``) and redirects (307) to the clean form; it redirects a subtree root without its slash
(``/status``) to the subtree; it compares each path segment unescaped (``/%68ello`` is
``/hello``); anything else is ``404 page not found``. Pure: a target in, a ``Decision`` out.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import List, Optional

EXACT = ("hello", "trial", "list", "shutdown")
SUBTREES = ("status", "cancel")
_HTML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;"))


@dataclass
class Decision:
    """``route`` names the pattern (``hello``, ``status``...), or ``location`` a redirect, or
    neither: 404."""

    route: Optional[str] = None
    location: Optional[str] = None


def clean(path: str) -> str:
    """Go's ``path.Clean``."""
    rooted = path.startswith("/")
    parts: List[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    text = "/".join(parts)
    if rooted:
        return "/" + text
    return text or "."


def clean_path(path: str) -> str:
    """net/http's ``cleanPath``: rooted, cleaned, a trailing slash kept."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    cleaned = clean(path)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def route(target: str, connect: bool = False) -> Decision:
    """The mux's answer for an origin-form target (``/path?query``); a CONNECT's path is not
    cleaned (and an authority-form CONNECT has none: 404)."""
    escaped, question, query = target.partition("?")
    if connect and not escaped.startswith("/"):
        return Decision()
    path = escaped if connect else clean_path(escaped)
    segments = [urllib.parse.unquote(part) for part in path[1:].split("/")]
    suffix = ("?" + query) if query else ""
    if len(segments) == 1 and segments[0] in SUBTREES:
        return Decision(location=escaped_path(path + "/") + suffix)
    if path != escaped:
        return Decision(location=escaped_path(path) + suffix)
    if len(segments) == 1 and segments[0] in EXACT:
        return Decision(route=segments[0])
    if len(segments) >= 2 and segments[0] in SUBTREES:
        return Decision(route=segments[0])
    return Decision()


_VALID_ENCODED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'()*+,;=:@[]%/")


def escaped_path(path: str) -> str:
    """Go's ``URL.EscapedPath`` for a path parsed from ``path`` (request bytes as latin-1): kept
    when it is a valid encoding, else the decoded bytes escaped again (``<`` is ``%3C``)."""
    raw = path.encode("latin-1", "replace")
    if all(byte in _VALID_ENCODED for byte in raw):
        return path
    return urllib.parse.quote_from_bytes(urllib.parse.unquote_to_bytes(raw), safe="-_.~$&+,/:;=@")


def location_header(location: str) -> str:
    """Go's ``hexEscapeNonASCII``: bytes past 0x7f as ``%XX``."""
    return "".join(char if ord(char) < 0x80 else "%%%02X" % ord(char) for char in location)


def redirect_body(location: str) -> bytes:
    """The HTML Go's ``http.Redirect`` writes for a GET (a 307 here)."""
    text = location
    for char, escape in _HTML_ESCAPES:
        text = text.replace(char, escape)
    return ('<a href="%s">Temporary Redirect</a>.\n\n' % text).encode("latin-1", "replace")
