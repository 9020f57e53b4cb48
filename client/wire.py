"""The copy-offload wire format, API version 1.0: the one place it is written down.

Both the server and the client import this module, so a route, a header, a body field, the
status JSON or an error text can only change here. It is pure (no I/O) and stays importable on
Python 3.9, because the client runs on compute nodes' system Pythons.

The reference is the Go server and the C ``libcopyoffload`` of NearNodeFlash's nnf-dm; where
their behaviour is odd (the ``Accepts-version`` spelling, Go's JSON decoding rules, Go time
strings) it is reproduced on purpose, so the reference client works against our server and
ours against theirs.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import posixpath
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

API_VERSION = "1.0"
VERSION_HEADER = "Accepts-version"  # sic: "Accepts", as libcopyoffload sends it
AUTH_HEADER = "Authorization"
BEARER = "Bearer"

# Routes: exact paths, and the two prefixes whose last path element is a request name.
HELLO = "/hello"
TRIAL = "/trial"
LIST = "/list"
SHUTDOWN = "/shutdown"
STATUS_PREFIX = "/status/"
CANCEL_PREFIX = "/cancel/"
METHODS = {HELLO: "GET", TRIAL: "POST", LIST: "GET", SHUTDOWN: "POST", STATUS_PREFIX: "GET", CANCEL_PREFIX: "DELETE"}
MAX_WAIT_PARAM = "maxWaitSecs"

# Success bodies.
HELLO_BODY = "hello back at ya\n"
SHUTDOWN_BODY = "Server shutting down\n"

# Error texts (the server appends one "\n", as Go's http.Error does).
ERR_NOT_FOUND_PAGE = "404 page not found"
ERR_METHOD = "method not supported"
ERR_UNAUTHORIZED = "unauthorized"
ERR_TOKEN_PREFIX = "token parse failed: "
ERR_VERSION = "Valid versions: " + API_VERSION
ERR_DECODE_PREFIX = "unable to decode data movement request body: "
ERR_COMPUTE = "compute name must be supplied"
ERR_SOURCE = "source path must be supplied"
ERR_DEST = "destination path must be supplied"
ERR_SLOTS = "slots must be -1 (defer to profile), 0 (disable), or a positive integer"
ERR_MAX_SLOTS = "maxSlots must be -1 (defer to profile), 0 (disable), or a positive integer"
ERR_PARSE_WAIT_PREFIX = "unable to parse maxWaitSecs: "
ERR_QUERY_PREFIX = "unexpected query parameters: "
ERR_REQUEST_NOT_FOUND = "request not found"
ERR_NOT_FOUND_AFTER_WAIT = "request not found after waiting for completion"
ERR_NOT_IN_WORKFLOW = "request does not belong to workflow"
ERR_CANCEL_PREFIX = "unable to cancel request: "
ERR_SHUTDOWN_BUSY = "unable to shutdown server: requests in progress"

# Status JSON vocabulary (reference DataMovementStatusResponse_v1_0).
STATE_PENDING = "pending"
STATE_STARTING = "starting"
STATE_RUNNING = "running"
STATE_COMPLETED = "completed"
STATE_CANCELLING = "cancelling"
STATE_UNKNOWN = "unknown state"
STATUS_INVALID = "invalid"
STATUS_SUCCESS = "success"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"
STATUS_UNKNOWN = "unknown status"

# The NnfDataMovement words a driver's RequestState speaks, and the status JSON they map to.
RES_STARTING = "Starting"
RES_RUNNING = "Running"
RES_FINISHED = "Finished"
RES_SUCCESS = "Success"
RES_FAILED = "Failed"
RES_INVALID = "Invalid"
RES_CANCELLED = "Cancelled"
RESOURCE_STATES = {"": STATE_UNKNOWN, RES_STARTING: STATE_STARTING, RES_RUNNING: STATE_RUNNING, RES_FINISHED: STATE_COMPLETED}
RESOURCE_STATUSES = {
    "": STATUS_UNKNOWN,
    RES_SUCCESS: STATUS_SUCCESS,
    RES_FAILED: STATUS_FAILED,
    RES_INVALID: STATUS_INVALID,
    RES_CANCELLED: STATUS_CANCELLED,
}


class WireError(ValueError):
    """A request that breaks the contract; ``code`` is the HTTP status the server answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- copy request


@dataclass
class CopyRequest:
    """POST /trial body. Absent fields take Go's zero values (so slots/maxSlots default to 0)."""

    computeName: str = ""
    sourcePath: str = ""
    destinationPath: str = ""
    dryrun: bool = False
    dcpOptions: str = ""
    logStdout: bool = False
    storeStdout: bool = False
    slots: int = 0
    maxSlots: int = 0
    dmProfile: str = ""
    mpirunOptions: str = ""

    def validate(self) -> None:
        """The reference validation, in its order; raises WireError(400)."""
        for value, text in (
            (self.computeName, ERR_COMPUTE),
            (self.sourcePath, ERR_SOURCE),
            (self.destinationPath, ERR_DEST),
        ):
            if value == "":
                raise WireError(400, text)
        if self.slots < -1:
            raise WireError(400, ERR_SLOTS)
        if self.maxSlots < -1:
            raise WireError(400, ERR_MAX_SLOTS)

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()


_GO_TYPES = {str: "string", bool: "bool", int: "int32"}
_FIELDS = {name: type(value) for name, value in CopyRequest().__dict__.items()}
_INT32 = (-(2**31), 2**31 - 1)


def json_kind(value: Any) -> str:
    """The JSON kind Go names in an unmarshal type error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


_JSON_SPACE = " \t\r\n"


def _go_syntax_error(doc: str, exc: json.JSONDecodeError) -> str:
    """Go's ``SyntaxError`` text for the error Python's parser found at ``exc.pos``."""
    msg, pos = exc.msg, exc.pos
    if msg.startswith("Unterminated string") or pos >= len(doc.rstrip(_JSON_SPACE)):
        return "unexpected EOF"
    where = "looking for beginning of value"
    if msg.startswith("Expecting value") and pos < len(doc) and doc[pos] in _LITERALS:
        return _literal_error(doc, pos)
    number = _number_error(doc, pos)
    if number:
        return number
    if msg.startswith("Invalid control character"):
        where = "in string"
    elif msg.startswith("Invalid \\escape"):
        # Go 1.27 (encoding/json on json/v2) quotes the escape: a backslash and the next byte.
        return "invalid escape sequence %s in string" % _go_quote(doc[pos:pos + 2].encode("utf-8", "surrogateescape")[:2])
    elif msg.startswith("Invalid \\uXXXX"):
        start = pos - 1  # Python points at the "u"
        if '"' not in doc[start:]:
            return "unexpected EOF"
        return "invalid escape sequence %s in string" % _go_quote(doc[start:start + 6].encode("utf-8", "surrogateescape")[:6])
    elif msg.startswith("Expecting property name"):
        where = "looking for beginning of object key string"
    elif msg.startswith("Expecting ':'"):
        where = "after object key"
    elif msg.startswith("Expecting ',' delimiter"):
        where = "after object key:value pair" if _innermost(doc, pos) == "{" else "after array element"
    if pos >= len(doc):
        return "unexpected EOF"
    return "invalid character %s %s" % (_go_quote_char(doc[pos]), where)


_LITERALS = {"n": "null", "t": "true", "f": "false"}


def _literal_error(doc: str, pos: int) -> str:
    """Go's error for a broken ``null``/``true``/``false``: the first character that does not fit."""
    word = _LITERALS[doc[pos]]
    for offset in range(1, len(word)):
        at = pos + offset
        if at >= len(doc):
            return "unexpected EOF"
        if doc[at] != word[offset]:
            return "invalid character %s in literal %s (expecting %s)" % (
                _go_quote_char(doc[at]), word, _go_quote_char(word[offset]))
    return "invalid character %s after top-level value" % _go_quote_char(doc[pos + len(word)])


def _number_error(doc: str, pos: int) -> str:
    """Go's error inside a number (``-}``, ``1.}``, ``1e}``): the character after the sign, dot
    or exponent that is not a digit. Empty when ``pos`` is not inside a number."""
    if pos < len(doc) and doc[pos] == "-":
        at = pos + 1
    elif pos < len(doc) and doc[pos] in ".eE" and pos > 0 and doc[pos - 1].isdigit():
        at = pos + 1
        if doc[pos] in "eE" and at < len(doc) and doc[at] in "+-":
            at += 1
    else:
        return ""
    if at >= len(doc):
        return "unexpected EOF"
    if doc[at] in "0123456789":
        return ""
    return "invalid character %s in numeric literal" % _go_quote_char(doc[at])


def go_unmarshal(data: bytes) -> Any:
    """``json.Unmarshal`` of a whole document into an interface: the value, or ValueError
    with Go's text (``unexpected end of JSON input``, ``invalid character ...``)."""
    doc = data.decode("utf-8", errors="replace")
    stripped = doc.strip(_JSON_SPACE)
    if not stripped:
        raise ValueError("unexpected end of JSON input")
    try:
        value, end = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(doc.lstrip(_JSON_SPACE))
    except json.JSONDecodeError as exc:
        text = _go_syntax_error(doc.lstrip(_JSON_SPACE), exc)
        raise ValueError("unexpected end of JSON input" if text == "unexpected EOF" else text) from None
    except RecursionError:
        raise ValueError("exceeded max depth") from None
    rest = doc.lstrip(_JSON_SPACE)[end:].lstrip(_JSON_SPACE)
    if rest:
        raise ValueError("invalid character %s after top-level value" % _go_quote_char(rest[0]))
    return value


def _brackets(doc: str) -> Iterator[str]:
    """The brackets of a JSON text that stand outside strings, in order."""
    in_string = escaped = False
    for char in doc:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[]{}":
            yield char


def _innermost(doc: str, end: int) -> str:
    """The bracket (``[`` or ``{``) that is open at ``doc[end]``."""
    stack: List[str] = []
    for char in _brackets(doc[:end]):
        if char in "[{":
            stack.append(char)
        elif stack:
            stack.pop()
    return stack[-1] if stack else ""


_GO_CHAR_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                    "\v": "\\v", "\\": "\\\\"}


def _go_quote(data: bytes) -> str:
    """Go's ``strconv.Quote`` of ``data`` or, where ``CanBackquote`` allows, a backquoted copy."""
    text = data.decode("utf-8", "surrogateescape")
    if all(c == "\t" or (c.isprintable() and c not in "`\ufeff" and not 0xDC80 <= ord(c) <= 0xDCFF) for c in text):
        return "`%s`" % text
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append("\\x%02x" % (code - 0xDC00))
        elif char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_CHAR_ESCAPES:
            out.append(_GO_CHAR_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append("\\x%02x" % code)
        elif not char.isprintable():
            out.append("\\u%04x" % code)
        else:
            out.append(char)
    return '"%s"' % "".join(out)


def _go_quote_char(char: str) -> str:
    """Go's ``quoteChar`` in encoding/json syntax errors: ``'x'``, ``'\\''``, ``'"'``, ``'\\n'``.

    Go quotes one byte (the first of a multi-byte character) with ``strconv.Quote``, so a
    control character is escaped and an error text is always one line.
    """
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (kept by surrogateescape)
        return "'\\x%02x'" % (code - 0xDC00)
    if code >= 0x80:  # Go 1.27 quotes the rune (strconv.QuoteRune): '\ufeff' for a BOM
        return "'%s'" % (char if char.isprintable() else "\\u%04x" % code)
    if char in _GO_CHAR_ESCAPES:
        text = _GO_CHAR_ESCAPES[char]
    elif code < 0x20 or code == 0x7F:
        text = "\\x%02x" % code
    elif not char.isprintable():
        text = "\\u%04x" % code
    else:
        text = char
    return "'%s'" % text


def decode_copy_request(body: bytes) -> CopyRequest:
    """Decode a /trial body as Go's ``json.Decoder.Decode`` into ``DMRequest`` would.

    First JSON value only, unknown keys ignored, keys matched case-insensitively (last one
    wins), ``null`` leaves a field alone, and type errors are reported in Go's words.
    """
    doc = body.decode("utf-8", errors="surrogateescape")  # a bad byte: U+FFFD in a string, '\xff' in an error
    stripped = doc.lstrip(" \t\r\n")
    if not stripped:
        raise WireError(400, ERR_DECODE_PREFIX + "EOF")
    try:
        value, _ = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_GoNumber).raw_decode(stripped)
    except json.JSONDecodeError as exc:
        raise WireError(400, ERR_DECODE_PREFIX + _go_syntax_error(stripped, exc)) from None
    except ValueError as exc:
        raise WireError(400, ERR_DECODE_PREFIX + str(exc)) from None
    except RecursionError:
        value = _decode_deep(stripped)
    request = CopyRequest()
    if value is None:
        return request
    if not isinstance(value, dict):
        raise WireError(
            400,
            ERR_DECODE_PREFIX
            + "json: cannot unmarshal %s into Go value of type driver.DMRequest" % json_kind(value),
        )
    by_folded = {name.lower(): name for name in _FIELDS}
    for key, item in value.items():
        key = _go_string(key)
        if isinstance(item, str):
            item = _go_string(item)
        name = by_folded.get(key.lower())
        if name is None or item is None:
            continue
        want = _FIELDS[name]
        ok = isinstance(item, want) and not (want is int and isinstance(item, bool))
        if want is int and ok:
            ok = _INT32[0] <= item <= _INT32[1]
        if want is int and isinstance(item, float) and not isinstance(item, bool):
            ok = False
        if not ok:
            kind = json_kind(item)
            if kind == "number" and want is int:
                kind = "number %s" % (item.text if isinstance(item, _GoNumber) else json.dumps(item))
            raise WireError(
                400,
                ERR_DECODE_PREFIX
                + "json: cannot unmarshal %s into Go struct field DMRequest.%s of type %s"
                % (kind, name, _GO_TYPES[want]),
            )
        setattr(request, name, item)
    return request


_SURROGATE = re.compile("[\ud800-\udfff]")


def _go_string(text: str) -> str:
    """Go's decoder turns an escaped lone surrogate (``\\ud800``) into U+FFFD; Python keeps it,
    and a str holding one cannot be encoded (a path, a log line, a JSON answer) later."""
    return _SURROGATE.sub("\ufffd", text)


class _GoNumber(float):
    """A JSON number with a fraction or exponent that keeps its text: Go's errors quote it (``1e3``)."""

    def __init__(self, text: str) -> None:
        self.text = text


_GO_MAX_DEPTH = 10000  # encoding/json's maxNestingDepth


def _depth(doc: str) -> int:
    depth = deepest = 0
    for char in _brackets(doc):
        depth += 1 if char in "[{" else -1
        deepest = max(deepest, depth)
        if depth <= 0 or deepest > _GO_MAX_DEPTH:
            break
    return deepest


def _decode_deep(doc: str) -> Any:
    """Go nests 10000 deep, Python's parser about 1000 (its recursion limit): a body nested
    between the two is parsed again with the limit raised for this one call."""
    import sys

    deepest = _depth(doc)
    if deepest > _GO_MAX_DEPTH:
        raise WireError(400, ERR_DECODE_PREFIX + "exceeded max depth")
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old + 2 * deepest + 100)
    try:
        value, _ = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_GoNumber).raw_decode(doc)
        return value
    except json.JSONDecodeError as exc:
        raise WireError(400, ERR_DECODE_PREFIX + _go_syntax_error(doc, exc)) from None
    except RecursionError:
        raise WireError(400, ERR_DECODE_PREFIX + "exceeded max depth") from None
    finally:
        sys.setrecursionlimit(old)


def _reject_constant(name: str) -> Any:
    raise ValueError("invalid character %s looking for beginning of value" % _go_quote_char(name[0]))


# --------------------------------------------------------------------------- URLs and queries


def request_name(path: str) -> str:
    """The name a /status or /cancel path addresses: Go's ``filepath.Base`` of the decoded path."""
    path = urllib.parse.unquote(path).rstrip("/")
    if not path:
        return "/"
    return posixpath.basename(path) or "/"


def parse_max_wait(query: str) -> int:
    """``maxWaitSecs`` as Go's ``strconv.Atoi`` reads it, then no other parameter allowed."""
    params = go_parse_query(query)
    raw = (params.pop(MAX_WAIT_PARAM, None) or [b""])[0].decode("utf-8", "replace")
    value = _go_atoi(raw)
    if params:
        raise WireError(400, ERR_QUERY_PREFIX + go_encode_query(params))
    return value


def go_parse_query(query: str) -> Dict[str, List[bytes]]:
    """Go's ``url.ParseQuery`` on the query's bytes (HTTP hands them over as latin-1), keeping
    what it keeps: a pair holding ``;`` or a bad escape is dropped (Go reports it and goes on),
    ``+`` is a space, a key without ``=`` has value ``""``."""
    params: Dict[str, List[bytes]] = {}
    for pair in query.encode("latin-1", "replace").split(b"&"):
        if not pair or b";" in pair:
            continue
        key, _, value = pair.partition(b"=")
        if _BAD_ESCAPE.search(key) or _BAD_ESCAPE.search(value):
            continue
        params.setdefault(_unescape(key).decode("latin-1"), []).append(_unescape(value))
    return params


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _unescape(data: bytes) -> bytes:
    return urllib.parse.unquote_to_bytes(data.replace(b"+", b" "))


def go_encode_query(params: Dict[str, List[bytes]]) -> str:
    """Go's ``Values.Encode``: keys sorted (as bytes), each key's values in order, QueryEscape'd."""
    return "&".join("%s=%s" % (urllib.parse.quote_plus(key.encode("latin-1"), safe="~"),
                               urllib.parse.quote_plus(value, safe="~"))
                    for key in sorted(params, key=lambda k: k.encode("latin-1")) for value in params[key])


def _go_atoi(raw: str) -> int:
    if re.fullmatch(r"[+-]?[0-9]+", raw):
        value = int(raw)
        if -(2**63) <= value < 2**63:
            return value
        reason = "value out of range"
    else:
        reason = "invalid syntax"
    raise WireError(400, ERR_PARSE_WAIT_PREFIX + 'strconv.Atoi: parsing %s: %s' % (json.dumps(raw), reason))


def status_path(name: str, max_wait_secs: int) -> str:
    return "%s%s?%s=%d" % (STATUS_PREFIX, name, MAX_WAIT_PARAM, max_wait_secs)


def cancel_path(name: str) -> str:
    return CANCEL_PREFIX + name


# --------------------------------------------------------------------------- status


@dataclass
class RequestState:
    """A request as a driver sees it, in the NnfDataMovement's own vocabulary.

    ``state`` is ""/Starting/Running/Finished and ``status`` ""/Success/Failed/Invalid/Cancelled,
    so the mapping to the status JSON is the reference's own. Times are aware datetimes.
    The ``bytes*``/``files*`` counters are ours: the JSON carries them under new keys.
    """

    state: str = ""
    status: str = ""
    message: str = ""
    command: str = ""
    progress: Optional[int] = None
    elapsed: float = 0.0
    last_message: str = ""
    last_message_time: Optional[_dt.datetime] = None
    start_time: Optional[_dt.datetime] = None
    end_time: Optional[_dt.datetime] = None
    cancel: bool = False
    bytes_total: Optional[int] = None
    bytes_done: Optional[int] = None
    files_total: Optional[int] = None
    files_done: Optional[int] = None
    rate: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)  # a driver's own commandStatus keys (verify's)
    start_time_text: Optional[str] = None  # startTime as written, when it is not go_time(start_time)

    @property
    def finished(self) -> bool:
        return self.state == RES_FINISHED


def status_document(rec: RequestState) -> Dict[str, Any]:
    """The status JSON object for ``rec``; raises WireError(500) for an unknown state/status."""
    if rec.start_time is None and rec.status != RES_INVALID:
        return {"state": STATE_PENDING, "status": STATUS_UNKNOWN}
    if rec.state not in RESOURCE_STATES:
        raise WireError(500, "failed to decode returned state")
    state = RESOURCE_STATES[rec.state]
    if state != STATE_COMPLETED and rec.cancel:
        state = STATE_CANCELLING
    if rec.status not in RESOURCE_STATUSES:
        raise WireError(500, "failed to decode returned status")
    command: Dict[str, Any] = {}
    if rec.command:
        command["command"] = rec.command
    if rec.progress:
        command["progress"] = int(rec.progress)
    if rec.elapsed > 0:
        command["elapsedTime"] = go_duration(rec.elapsed)
    if rec.last_message:
        command["lastMessage"] = rec.last_message
    if rec.last_message_time is not None:
        command["lastMessageTime"] = go_time(rec.last_message_time)
    # Ours, beside the reference keys; the C client reads only the keys above.
    for key, value in (
        ("bytesTotal", rec.bytes_total),
        ("bytesCopied", rec.bytes_done),
        ("filesTotal", rec.files_total),
        ("filesCopied", rec.files_done),
        ("bytesPerSecond", None if rec.rate is None else int(rec.rate)),
    ):
        if value is not None:
            command[key] = value
    command.update(rec.extra)
    doc: Dict[str, Any] = {"state": state, "status": RESOURCE_STATUSES[rec.status]}
    if rec.message:
        doc["message"] = rec.message
    doc["commandStatus"] = command
    start = rec.start_time_text or (go_time(rec.start_time) if rec.start_time else "")
    if start:
        doc["startTime"] = start
    if rec.end_time is not None:
        doc["endTime"] = go_time(rec.end_time)
    return doc


_GO_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json(doc: Any) -> bytes:
    """JSON as Go's ``json.Encoder`` writes it: compact, HTML-escaped, one trailing newline."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    for char, escape in _GO_HTML_ESCAPES.items():
        text = text.replace(char, escape)
    return (text + "\n").encode("utf-8")


def go_time(when: _dt.datetime) -> str:
    """Go's ``Time.Local().String()``: ``2025-04-01 11:46:36.535519 -0500 CDT``."""
    local = when.astimezone()
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if local.microsecond:
        text += ("." + "%06d" % local.microsecond).rstrip("0")
    offset = local.strftime("%z") or "+0000"
    zone = local.tzname() or offset
    if re.fullmatch(r"[+-]\d\d(:?\d\d)?", zone) or zone.startswith("UTC") and zone != "UTC":
        zone = offset  # Go prints the numeric offset when a zone has no abbreviation
    return "%s %s %s" % (text, offset, zone)


def go_duration(seconds: float) -> str:
    """Go's ``Duration.Truncate(time.Millisecond).String()``: ``1m30.123s``, ``250ms``, ``0s``."""
    ms = int(math.floor(seconds * 1000 + 1e-9))
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return "%dms" % ms
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    sec_text = "%d" % secs + ((".%03d" % frac).rstrip("0") if frac else "") + "s"
    if hours:
        return "%dh%dm%s" % (hours, minutes, sec_text)
    if minutes:
        return "%dm%s" % (minutes, sec_text)
    return sec_text


# --------------------------------------------------------------------------- responses


def error_body(message: str) -> bytes:
    """Go's ``http.Error``: the message plus one newline."""
    return (message + "\n").encode("utf-8")


def trial_body(name: str) -> bytes:
    return ("name=%s\n" % name).encode("utf-8")


def parse_trial_body(body: str) -> str:
    """The request name in ``name=<name>\\n``, as libcopyoffload reads it."""
    _, _, rest = body.partition("=")
    return rest.split("\n", 1)[0]


def list_body(names: List[str]) -> bytes:
    return (",".join(sorted(names)) + "\n").encode("utf-8") if names else b""


def parse_list_body(body: str) -> List[str]:
    line = body.split("\n", 1)[0].strip()
    return [name for name in line.split(",") if name] if line else []


def split_request_name(name: str) -> Tuple[str, str]:
    """``<namespace>--<name>``; raises WireError(404) for a name without ``--``."""
    namespace, sep, rest = name.partition("--")
    if not sep or not namespace or not rest:
        raise WireError(404, ERR_REQUEST_NOT_FOUND)
    return namespace, rest
