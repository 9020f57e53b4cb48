"""The asyncio twin of ``transport.Pool``: the same request bytes and answer parser over asyncio
streams. A module of its own so the blocking client never pays for importing asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Dict, List, Optional, Tuple

from copy_offload.client.transport import (
    READ_SIZE,
    Answer,
    AnswerError,
    host_header,
    may_retry,
    request_bytes,
)

_Stream = Tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AsyncPool:
    """Kept-alive connections to one server; concurrent requests each get a connection."""

    def __init__(self, host: str, port: int, context: Optional[ssl.SSLContext], connect_timeout: float) -> None:
        self.host, self.port, self.context = host, port, context
        self.connect_timeout = connect_timeout
        self._idle: List[_Stream] = []

    async def request(self, method: str, path: str, headers: Dict[str, str], body: Optional[bytes],
                      read_timeout: Optional[float]) -> Answer:
        data = request_bytes(method, host_header(self.host, self.port), path, headers, body)
        while True:
            stream, reused = await self._take()
            try:
                answer = await self._exchange(stream, data, read_timeout)
            except (AnswerError, OSError) as exc:
                stream[1].close()
                if may_retry(method, reused, exc):
                    continue
                raise
            except asyncio.TimeoutError:
                stream[1].close()
                raise socket.timeout("timed out") from None
            except BaseException:  # cancelled: the connection is mid-answer, not reusable
                stream[1].close()
                raise
            if answer.keep_alive:
                self._idle.append(stream)
            else:
                stream[1].close()
            return answer

    async def _exchange(self, stream: _Stream, data: bytes, read_timeout: Optional[float]) -> Answer:
        reader, writer = stream
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.connect_timeout)
        answer = Answer()
        while not answer.done:
            chunk = await asyncio.wait_for(reader.read(READ_SIZE), read_timeout)
            if not chunk:
                answer.at_eof()
                break
            answer.feed(chunk)
        return answer

    async def _take(self) -> Tuple[_Stream, bool]:
        while self._idle:
            stream = self._idle.pop()
            if not stream[0].at_eof() and not stream[1].is_closing():
                return stream, True
            stream[1].close()
        return await self._connect(), False

    async def _connect(self) -> _Stream:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.context,
                                        server_hostname=self.host if self.context is not None else None),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise socket.timeout("timed out") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def aclose(self) -> None:
        """Close and wait for the connections to be gone, so none is left for the garbage collector."""
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self.connect_timeout)
