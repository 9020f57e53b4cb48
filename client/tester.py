"""``copy-offload-tester``: flag-for-flag and output-for-output the reference ``tester`` tool.

Same getopt string, same precedence of actions (l > c > o > H > q > X > R), same stdout/stderr
split and exit codes, same status pretty-print, so scripts written for the C tool keep working.
"""

from __future__ import annotations

import errno
import getopt
import os
import ssl
import stat
import sys
import time
from typing import Any, Callable, Iterator, List, Optional, TextIO

from copy_offload.client.client import Client
from copy_offload.client.discovery import CERT_PATH, discover
from copy_offload.client.errors import ConnectError, CopyOffloadError, ServerError, TransportError
from copy_offload.client.models import Status

OPTSTRING = "hvVlst:x:c:oC:P:S:D:m:M:dHqj:w:XR"


def usage(prog: str, out: TextIO) -> None:
    u = "Usage: %s" % prog
    out.write(
        f"{u} [COMMON_ARGS] -H\n"
        "    -H            Send a hello message to the server.\n\n"
        f"{u} [COMMON_ARGS] -l\n"
        "    -l            List all active copy-offload requests.\n\n"
        f"{u} [COMMON_ARGS] -c JOB_NAME\n"
        "    -c JOB_NAME   Cancel the specified copy-offload request.\n\n"
        f"{u} [COMMON_ARGS] -o <ARGS>\n"
        "    -o            Perform a copy-offload request, using the following args:\n"
        "       -P DM_PROFILE_NAME Name of the DM profile to use (optional).\n"
        "       -S SOURCE_PATH     Local path to source file to be copied.\n"
        "       -D DEST_PATH       Local path to destination.\n"
        "       -m SLOTS           Number of slots (processes).\n"
        "       -M MAX_SLOTS       Maximum number of slots (processes).\n"
        "       -C MY_HOSTNAME     Name of the host submitting the request. (for development/debugging)\n"
        "       -d                 Perform a dry run.\n\n"
        f"{u} [COMMON_ARGS] -S <ARGS>\n"
        "    -q            Submit a status request for the specified job.\n"
        "       -j JOB_NAME    The job name returned by the copy-offload request.\n"
        "       -w MAX_WAIT    Maximum number of seconds to wait for the job to complete. (default 0)\n\n"
        f"{u} [COMMON_ARGS] -X\n"
        "    -X     Shutdown the copy-offload server.\n\n"
        f"{u} [COMMON_ARGS] -R -S SOURCE_PATH -D DEST_PATH\n"
        "    -R            Run sticky-method regression test.\n"
        "                  Exercises multiple operations on a single handle to verify\n"
        "                  that HTTP methods are not corrupted by prior calls.\n"
        "COMMON_ARGS\n"
        "    -v                  Request verbose output from this tool.\n"
        "    -V                  Request verbose output from libcurl.\n"
        "    -s                  Skip TLS configuration.\n"
        "    -t TOKEN_FILE       Bearer token file.\n"
        "    -x CERT_FILE        CA/Server certificate file. A self-signed certificate.\n"
    )


def atoi(text: str) -> int:
    """C's atoi: leading whitespace, optional sign, digits; anything else stops it (0 if none)."""
    text = text.lstrip()
    sign, digits = 1, ""
    if text[:1] in "+-" and text[:1]:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    for char in text:
        if not char.isdigit():
            break
        digits += char
    return sign * int(digits) if digits else 0


def pretty_status(status: Optional[Status], out: TextIO) -> None:
    """``copy_offload_status_pretty_print``: missing strings print as ``(null)``."""
    if status is None:
        out.write("The response object is empty.\n")
        return
    raw = status.raw
    cmd = raw.get("commandStatus") if isinstance(raw.get("commandStatus"), dict) else {}

    def field(source: Any, key: str) -> str:
        if not isinstance(source, dict) or key not in source or source[key] is None:
            return "(null)"
        value = source[key]
        return value if isinstance(value, str) else _json_text(value)

    progress = cmd.get("progress") if isinstance(cmd, dict) else None
    out.write(
        "state: %s\nstatus: %s\nmessage: %s\ncommand: %s\nprogress: %d\nelapsed time: %s\n"
        "last message: %s\nlast message time: %s\nstart time: %s\nend time: %s\n"
        % (
            field(raw, "state"), field(raw, "status"), field(raw, "message"), field(cmd, "command"),
            progress if isinstance(progress, int) and not isinstance(progress, bool) else 0,
            field(cmd, "elapsedTime"), field(cmd, "lastMessage"), field(cmd, "lastMessageTime"),
            field(raw, "startTime"), field(raw, "endTime"),
        )
    )


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


# --------------------------------------------------------------------------- the C tool's client-side texts


class CText(CopyOffloadError):
    """A failure worded as libcopyoffload words it (its ``err_message``, newline included)."""


def read_token_like_c(path: str) -> str:
    """libcopyoffload's ``read_contents``: stat, open, read ``st_size`` bytes, one CR/LF dropped."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CText("Unable to stat %s: errno %d\n" % (path, exc.errno or 0)) from None
    if stat.S_ISDIR(info.st_mode):  # fopen succeeds on a directory; fread then reads nothing
        raise CText("Incomplete read of %s. Wanted %d, got 0\n" % (path, info.st_size))
    try:
        with open(path, "rb") as handle:
            data = handle.read(info.st_size)
    except OSError as exc:
        raise CText("Unable to open %s: errno %d\n" % (path, exc.errno or 0)) from None
    if len(data) != info.st_size:
        raise CText("Incomplete read of %s. Wanted %d, got %d\n" % (path, info.st_size, len(data)))
    if data[-1:] in (b"\n", b"\r"):
        data = data[:-1]
    return data.decode("utf-8", "surrogateescape")


def check_ca_like_curl(path: str) -> None:
    """libcurl's CURLE_SSL_CACERT_BADFILE (77) for a CA file it cannot load."""
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError, ValueError):
        raise CText("libcurl: (77) error setting certificate file: %s\n" % path) from None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def curl_text(exc: TransportError, host: str, port: int, tls: bool, elapsed_ms: int) -> str:
    """What libcopyoffload prints for a request that got no HTTP answer: libcurl's code and text."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "libcurl: (60) SSL certificate problem: %s\n" % (cause.verify_message or "unable to verify")
        if isinstance(cause, ConnectionResetError):
            # During the TLS handshake libcurl says 35 (CURLE_SSL_CONNECT_ERROR), after it 56.
            code = 35 if tls and isinstance(exc, ConnectError) else 56
            return "libcurl: (%d) Recv failure: Connection reset by peer\n" % code
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return ("libcurl: (7) Failed to connect to %s port %d after %d ms: Couldn't connect to server\n"
                    % (host, port, elapsed_ms))
    return "libcurl: (%d) %s\n" % (exc.curl_code, exc)


class Handle:
    """The tester's view of one libcopyoffload handle: last HTTP code and error message."""

    def __init__(self, client: Client, verbose_http: bool) -> None:
        self.client = client
        self.http_code = -1
        self.err_message = ""
        self.verbose_http = verbose_http

    def run(self, method: str, path: str, action: Callable[[], Any]) -> tuple[int, Any, str]:
        """(ret, result, body): ret 0 iff HTTP 200; body is the server's text on an HTTP error."""
        self.err_message = ""
        self.http_code = -1
        if self.verbose_http:
            sys.stderr.write("> %s %s%s\n" % (method, self.client.config.base_url, path))
        started = time.monotonic()
        config = self.client.config
        try:
            result = action()
        except ServerError as exc:
            self.http_code = exc.status
            self._trace()
            return 1, None, exc.body
        except TransportError as exc:
            self.err_message = curl_text(exc, config.host, config.port, config.tls,
                                         int(1000 * (time.monotonic() - started)))
            return 1, None, ""
        except CopyOffloadError as exc:  # a 200 we could not read
            self.http_code = 200
            self.err_message = str(exc)
            return 1, None, ""
        self.http_code = 200
        self._trace()
        return 0, result, ""

    def _trace(self) -> None:
        if self.verbose_http:
            sys.stderr.write("< HTTP/1.1 %d\n" % self.http_code)


def first_line(body: str) -> Optional[str]:
    return body.split("\n", 1)[0] if body else None


def sticky_test(h: Handle, source: str, dest: str, copy_options: dict) -> int:
    err = sys.stderr
    client = h.client

    def step(label: str, method: str, path: str, action: Callable[[], Any]) -> tuple[bool, Any]:
        ret, result, body = h.run(method, path, action)
        if ret != 0:
            err.write("FAIL sticky-test: %s failed: %s\n" % (label, h.err_message or body))
        return ret == 0, result

    err.write("sticky-test: copy #1\n")
    ok, job1 = step("copy #1", "POST", "/trial", lambda: client.copy(source, dest, **copy_options))
    if not ok:
        return 1
    err.write("sticky-test: copy #1 got job: %s\n" % job1)
    err.write("sticky-test: cancel job %s\n" % job1)
    if not step("cancel", "DELETE", "/cancel/" + job1, lambda: client.cancel(job1))[0]:
        return 1
    err.write("sticky-test: list after cancel\n")
    if not step("list after cancel", "GET", "/list", client.list)[0]:
        return 1
    err.write("sticky-test: hello after cancel\n")
    if not step("hello after cancel", "GET", "/hello", client.hello)[0]:
        return 1
    err.write("sticky-test: copy #2\n")
    ok, job2 = step("copy #2", "POST", "/trial", lambda: client.copy(source, dest, **copy_options))
    if not ok:
        return 1
    err.write("sticky-test: copy #2 got job: %s\n" % job2)
    err.write("sticky-test: status for job %s\n" % job2)
    if not step("status", "GET", "/status/" + job2, lambda: client.status(job2, 0))[0]:
        return 1
    err.write("sticky-test: cancel job %s\n" % job2)
    if not step("cancel #2", "DELETE", "/cancel/" + job2, lambda: client.cancel(job2))[0]:
        return 1
    err.write("sticky-test: PASS\n")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv if argv is None else argv
    prog = argv[0]
    try:
        opts, rest = getopt.gnu_getopt(argv[1:], OPTSTRING)
    except getopt.GetoptError:
        usage(prog, sys.stderr)
        return 1
    if rest:
        usage(prog, sys.stderr)
        return 1
    o: dict = {"slots": -1, "max_slots": -1, "wait": 0, "dryrun": False}
    flags = set()
    for opt, value in opts:
        key = opt[1]
        if key in "lcoHqXRvVsd":
            flags.add(key)
        if key == "h":
            usage(prog, sys.stderr)
            return 1
        if key in "cj":
            o["job"] = value
        elif key in "tx":
            o[key] = value
        elif key == "C":
            o["compute"] = value
        elif key == "P":
            o["profile"] = value
        elif key in "SD":
            o[key] = value
        elif key == "m":
            o["slots"] = atoi(value)
        elif key == "M":
            o["max_slots"] = atoi(value)
        elif key == "w":
            o["wait"] = atoi(value)
    if flags & {"o", "R"} and ("S" not in o or "D" not in o):
        usage(prog, sys.stderr)
        return 1
    if flags & {"q", "c"} and "job" not in o:
        usage(prog, sys.stderr)
        return 1

    tls = "s" not in flags
    try:
        config = discover(tls=tls, ca_file=o.get("x") or CERT_PATH, compute_name=o.get("compute"))
        if "t" in o:
            config.token = read_token_like_c(o["t"]) or None
        if tls:  # libcurl would fail its first transfer on it; our client, earlier, in other words
            check_ca_like_curl(config.ca_file or CERT_PATH)
    except CopyOffloadError as exc:
        sys.stderr.write("%s\n" % exc)
        return 1
    try:
        client = Client(config)
    except CopyOffloadError as exc:
        sys.stderr.write("%s\n" % exc)
        return 1
    h = Handle(client, "V" in flags)
    copy_options = {"profile": o.get("profile"), "slots": o["slots"], "max_slots": o["max_slots"],
                    "dryrun": "d" in flags, "log_stdout": True, "store_stdout": False}
    output: Optional[str] = None
    status_printed = False
    job = o.get("job", "")
    try:
        if "l" in flags:
            ret, names, body = h.run("GET", "/list", client.list)
            output = ",".join(names) if ret == 0 and names else first_line(body)
        elif "c" in flags:
            ret, _, body = h.run("DELETE", "/cancel/" + job, lambda: client.cancel(job))
            output = first_line(body)
        elif "o" in flags:
            ret, name, body = h.run("POST", "/trial", lambda: client.copy(o["S"], o["D"], **copy_options))
            if ret == 0:
                output = name
            elif body:
                h.err_message = body
        elif "H" in flags:
            ret, text, body = h.run("GET", "/hello", client.hello)
            output = text if ret == 0 else first_line(body)
        elif "q" in flags:
            ret, status, body = h.run("GET", "/status/" + job, lambda: client.status(job, o["wait"]))
            if ret == 0 or body:
                pretty_status(status if ret == 0 else Status.from_body(body), sys.stdout)
                status_printed = True
        elif "X" in flags:
            ret = shutdown(h)
        elif "R" in flags:
            ret = sticky_test(h, o["S"], o["D"], copy_options)
        else:
            sys.stderr.write("What action?\n")
            return 1
        if output is not None and not status_printed:
            sys.stdout.write("%s\n" % output)
        if "v" in flags:
            sys.stdout.write("ret %d, http_code %d\n" % (ret, h.http_code))
        if ret:
            sys.stderr.write("%s\n" % h.err_message)
        sys.stdout.flush()
        return ret
    finally:
        client.close()


def shutdown(h: Handle) -> int:
    ret, names, _ = h.run("GET", "/list", h.client.list)
    if ret != 0:
        return 1
    if names:
        h.err_message = "Cannot shutdown: active copy-offload requests are still running."
        return 1
    ret, _, _ = h.run("POST", "/shutdown", h.client.shutdown)
    if ret != 0:
        h.err_message = "Failed to shutdown server (HTTP %d)" % h.http_code
    return ret


if __name__ == "__main__":
    sys.exit(main())
