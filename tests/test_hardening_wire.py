"""The wire module and the token check under hostile input, in process (fast, many examples).

Whatever bytes arrive, ``decode_copy_request`` raises only ``WireError(400)`` with one line of
text, ``parse_max_wait`` only ``WireError(400)``, ``request_name`` never raises, and the token
verifier raises only ``TokenRejected`` whose text never contains the token.
"""

from __future__ import annotations

import json

import pytest
from copy_offload.client import wire
from hypothesis import given, settings
from hypothesis import strategies as st

MANY = settings(max_examples=500, deadline=None, database=None)


def decode_error(body: bytes) -> str:
    with pytest.raises(wire.WireError) as info:
        wire.decode_copy_request(body)
    assert info.value.code == 400
    return info.value.message


@pytest.mark.parametrize("body, text", [
    (b"[" * 100_000, "exceeded max depth"),
    (b'{"a":' * 20_000, "exceeded max depth"),
    # Go nests 10000 deep: 3000 is parsed, and the body ends too soon.
    (b'{"computeName":[' + b"[" * 3000, "unexpected EOF"),
    (b'["[[[[",' + b'{"a":' * 3000, "unexpected EOF"),
])
def test_deep_nesting_is_a_400_not_a_crash(body, text):
    assert decode_error(body) == wire.ERR_DECODE_PREFIX + text


def test_nesting_python_can_parse_still_decodes():
    body = b'{"computeName":"c","x":' + b"[" * 200 + b"]" * 200 + b"}"
    assert wire.decode_copy_request(body).computeName == "c"


@pytest.mark.parametrize("body, text", [
    (b'{"computeName":"a\nb"}', "invalid character '\\n' in string"),
    (b'{"computeName":"a\tb"}', "invalid character '\\t' in string"),
    (b"\x00", "invalid character '\\x00' looking for beginning of value"),
    (b"\x0b", "invalid character '\\v' looking for beginning of value"),
    (b"\x7f", "invalid character '\\x7f' looking for beginning of value"),
    (b"{\x01}", "invalid character '\\x01' looking for beginning of object key string"),
    (b"\\", "invalid character '\\\\' looking for beginning of value"),
    (b'{"computeName":"\\q"}', "invalid escape sequence `\\q` in string"),
    (b'{"computeName":"\\u12zz"}', "invalid escape sequence `\\u12zz` in string"),
    (b'{"a":[1 2]}', "invalid character '2' after array element"),
    (b'[{"a":1 "b":2}]', "invalid character '\"' after object key:value pair"),
    (b'{"a":"abc', "unexpected EOF"),
    (b'{"a":  ', "unexpected EOF"),
    ("\u00e9".encode(), "invalid character '\u00e9' looking for beginning of value"),
    (b"\xc2\x80", "invalid character '\\u0080' looking for beginning of value"),
    (b"\xff", "invalid character '\\xff' looking for beginning of value"),
    (b"not json", "invalid character 'o' in literal null (expecting 'u')"),
    (b"tru", "unexpected EOF"),
    (b'{"a":fals}', "invalid character '}' in literal false (expecting 'e')"),
    (b"\xef\xbb\xbf{}", "invalid character '\\ufeff' looking for beginning of value"),
    (b'{"a":"\\\n"}', 'invalid escape sequence "\\\\\\n" in string'),
    (b'{"a":"\\u"}', "invalid escape sequence `\\u\"}` in string"),
])
def test_syntax_errors_in_go_words(body, text):
    """Go 1.27's texts: the offending rune quoted (a bad byte as ``\\xff``), a broken literal
    with the letter it expected, an escape sequence quoted whole (one line)."""
    assert decode_error(body) == wire.ERR_DECODE_PREFIX + text


@pytest.mark.parametrize("literal", ["1e3", "1E+2", "1.50", "-0.0", "1e999", "2.0"])
def test_number_errors_quote_the_literal(literal):
    """Go's ``UnmarshalTypeError`` names the number as written, not as a float prints."""
    text = decode_error(b'{"slots":%s}' % literal.encode())
    assert text == (wire.ERR_DECODE_PREFIX + "json: cannot unmarshal number %s into Go struct field "
                    "DMRequest.slots of type int32" % literal)


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4)
                          | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)


@given(body=st.binary(max_size=300) | json_value.map(lambda v: json.dumps(v).encode()))
@MANY
def test_decode_raises_only_wire_errors(body):
    try:
        wire.decode_copy_request(body)
    except wire.WireError as exc:
        assert exc.code == 400 and exc.message.startswith(wire.ERR_DECODE_PREFIX)
        assert "\n" not in exc.message and "\r" not in exc.message and exc.message.isprintable(), exc.message


@given(prefix=st.binary(max_size=40), junk=st.binary(min_size=1, max_size=4), suffix=st.binary(max_size=40))
@MANY
def test_errors_are_one_printable_line(prefix, junk, suffix):
    """Control bytes anywhere in a body never reach the error text raw (it is logged, too)."""
    for body in (prefix + junk + suffix, b'{"computeName":"' + junk + b'"}', b'{"' + junk + b'":1}'):
        try:
            wire.decode_copy_request(body)
        except wire.WireError as exc:
            assert exc.message.isprintable(), exc.message
