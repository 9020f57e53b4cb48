"""Typed results: a request's status as the server reports it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from copy_offload.client import wire


@dataclass(frozen=True)
class Status:
    """One status answer. Reference fields first, then ours (``None`` from servers without them)."""

    state: str = ""
    status: str = ""
    message: str = ""
    command: str = ""
    progress: int = 0
    elapsed_time: str = ""
    last_message: str = ""
    last_message_time: str = ""
    start_time: str = ""
    end_time: str = ""
    bytes_total: Optional[int] = None
    bytes_copied: Optional[int] = None
    files_total: Optional[int] = None
    files_copied: Optional[int] = None
    bytes_per_second: Optional[int] = None
    bytes_verified: Optional[int] = None  # the ``verify`` profile: bytes read back and compared
    verify_mismatches: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def done(self) -> bool:
        """True once the request has finished, whatever its outcome."""
        return self.state == wire.STATE_COMPLETED

    @property
    def ok(self) -> bool:
        return self.done and self.status == wire.STATUS_SUCCESS

    @classmethod
    def from_document(cls, doc: Dict[str, Any]) -> Status:
        cmd = doc.get("commandStatus") or {}
        if not isinstance(cmd, dict):
            cmd = {}

        def text(source: Dict[str, Any], key: str) -> str:
            value = source.get(key)
            return value if isinstance(value, str) else ""

        def number(key: str) -> Optional[int]:
            value = cmd.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                return None  # 1e999, NaN, Infinity: not a count
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        return cls(
            state=text(doc, "state"),
            status=text(doc, "status"),
            message=text(doc, "message"),
            command=text(cmd, "command"),
            progress=number("progress") or 0,
            elapsed_time=text(cmd, "elapsedTime"),
            last_message=text(cmd, "lastMessage"),
            last_message_time=text(cmd, "lastMessageTime"),
            start_time=text(doc, "startTime"),
            end_time=text(doc, "endTime"),
            bytes_total=number("bytesTotal"),
            bytes_copied=number("bytesCopied"),
            files_total=number("filesTotal"),
            files_copied=number("filesCopied"),
            bytes_per_second=number("bytesPerSecond"),
            bytes_verified=number("verifiedBytes"),
            verify_mismatches=number("verifyMismatches"),
            raw=doc,
        )

    @classmethod
    def from_body(cls, body: str) -> Optional[Status]:
        """Parse the first line of a status body; ``None`` if it is not a JSON object."""
        try:
            doc = json.loads(body.split("\n", 1)[0])
        except (ValueError, RecursionError):  # RecursionError: nested too deeply for the parser
            return None
        return cls.from_document(doc) if isinstance(doc, dict) else None
