"""Time limits on reading a request, so a slow or stalled client cannot hold a connection.

uvicorn closes idle keep-alive connections, but not a connection that never finishes its
headers (slowloris) or stops sending its body half-way. :func:`guarded_http_protocol` returns
uvicorn's httptools protocol with two timers:

- headers: from the connection's start (or a request's first byte) until its headers are
  complete, at most ``header_timeout_seconds``;
- body: at most ``body_idle_timeout_seconds`` without a byte of the body arriving (an idle
  limit, not a total, so a large upload on a slow link still goes through).

While the application is not reading (uvicorn paused the socket because the body is waiting
to be consumed) the body timer does not count: the client is not the slow one then.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Why 10 s: a client on any working network sends its request line and headers in well under
# a second; 10 s leaves room for a congested link and still frees a slowloris slot quickly.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
# Why 30 s: a body that pauses half a minute mid-request is a stalled client, not a slow link.
DEFAULT_BODY_IDLE_TIMEOUT_SECONDS = 30.0


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_seconds = DEFAULT_HEADER_TIMEOUT_SECONDS
    body_idle_timeout_seconds = DEFAULT_BODY_IDLE_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out, seconds)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self, seconds: float) -> None:
        self._read_timer = None
        if self.flow is not None and self.flow.read_paused:  # we are the slow side: wait on
            self._arm(seconds)
            return
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout_seconds)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_idle_timeout_seconds)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(self.body_idle_timeout_seconds)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def guarded_http_protocol(
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
    body_idle_timeout_seconds: float = DEFAULT_BODY_IDLE_TIMEOUT_SECONDS,
) -> type[HttpToolsProtocol]:
    """uvicorn's ``http=`` protocol class with these read limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedHttpToolsProtocol,),
        {
            "header_timeout_seconds": header_timeout_seconds,
            "body_idle_timeout_seconds": body_idle_timeout_seconds,
        },
    )
