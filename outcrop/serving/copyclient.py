"""A lean keep-alive HTTP/1.1 client for the router -> copy hop (asyncio + httptools).

Why not httpx: on these 2-core machines an ``httpx.AsyncClient`` spends ~1 ms of CPU per
request and its connection pool tops out near 500 requests/s against a copy that answers
instantly, which alone would miss the gateway's goals (added p50 <= 1 ms, >= 1,000 requests/s;
benchmarks/gateway_overhead.py measures them).
This client does one thing: JSON POSTs and GETs to one copy over pooled keep-alive
connections, with responses parsed by ``httptools`` (llhttp, the parser uvicorn uses), and
streamed bodies handed over as they arrive. It measured ~0.17 ms per request and ~9,000
requests/s on the same machine (``benchmarks/gateway_overhead.py``).

Semantics the router relies on:

- A request that fails before any response byte on a *reused* connection (the copy closed
  an idle keep-alive connection just then) is sent again once on a fresh connection; that
  is not a copy failure. Every other transport failure raises :class:`CopyTransportError`.
- A request abandoned mid-response (deadline, client gone) closes its connection, so the
  copy sees the disconnect and stops generating.
- Idle connections are dropped after ``IDLE_SECONDS`` (servers close theirs after ~5 s).
- Every request carries ``Authorization: Bearer <token>``, the copy's own secret (its launcher
  made it; see :mod:`outcrop.engine.auth`): copies answer nothing but ``/health`` without it.
- A body's ``priority`` field (vLLM's scheduling priority, which the router sets for batch
  records) is optional to the copy: a copy that answers 400 naming it (vLLM without
  ``--scheduling-policy priority`` says "Priority scheduling is not enabled"; a strict server
  calls it an unknown field) gets the request again without it, and never gets it again.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools

# Why 4 s: uvicorn (Outcrop's worker, vLLM, SGLang) closes idle keep-alive connections after
# 5 s; dropping ours first avoids most races with that close.
IDLE_SECONDS = 4.0
# Why 10 s: connecting over loopback takes microseconds; a copy that does not accept in
# seconds is dead or wedged.
CONNECT_TIMEOUT_SECONDS = 10.0
# Idle connections kept per copy (more are opened under load and closed after use).
MAX_IDLE_CONNECTIONS = 64


class CopyTransportError(Exception):
    """The connection to a copy failed (refused, reset, closed mid-response)."""


class CopyRefusedError(CopyTransportError):
    """Nothing listens on the copy's port any more: its server is gone, whatever its process says."""


class _Exchange:
    """One request/response on a connection."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.headers_done: asyncio.Future[int] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.more = asyncio.Event()
        self.got_bytes = False
        self.content_length: int | None = None
        self.chunked = False

    def fail(self, exc: BaseException) -> None:
        for future in (self.headers_done, self.finished):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: the waiter may already be gone
        self.more.set()


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.reused = False
        self.idle_since = time.monotonic()
        self._header_name = b""

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(CopyTransportError(f"the copy sent a malformed HTTP response ({exc})"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        ex = self.exchange
        delimited_by_close = ex is not None and ex.content_length is None and not ex.chunked and exc is None
        if ex is not None and delimited_by_close and ex.headers_done.done() and not ex.finished.done():
            ex.finished.set_result(None)  # a body delimited by the end of the connection
            ex.more.set()
            self.closed = True
            return
        self._lost(CopyTransportError(f"the copy closed the connection ({exc or 'EOF'})"))

    def _lost(self, exc: CopyTransportError) -> None:
        self.closed = True
        if self.exchange is not None:
            self.exchange.fail(exc)

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        lower = name.lower()
        if lower == b"content-length":
            ex.content_length = int(value)
        elif lower == b"transfer-encoding" and b"chunked" in value.lower():
            ex.chunked = True

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is not None and not ex.headers_done.done():
            ex.headers_done.set_result(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.chunks.append(bytes(body))
            ex.more.set()

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is not None and not ex.finished.done():
            ex.finished.set_result(None)
            ex.more.set()
        if not self.parser.should_keep_alive():
            self.closed = True


class CopyResponse:
    """A response whose body may still be arriving (``stream``) or is complete."""

    def __init__(self, client: CopyClient, conn: _Connection, exchange: _Exchange, status: int) -> None:
        self.status_code = status
        self._client = client
        self._conn = conn
        self._exchange = exchange
        self._released = False

    async def aread(self) -> bytes:
        try:
            await self._exchange.finished
        except BaseException:
            self.close()
            raise
        body = b"".join(self._exchange.chunks)
        self._exchange.chunks.clear()
        self.close()
        return body

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Lines of the body as they arrive (``\\n`` or ``\\r\\n`` separated), without the newline."""
        ex = self._exchange
        pending = b""
        try:
            while True:
                while ex.chunks:
                    pending += ex.chunks.popleft()
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.rstrip(b"\r").decode("utf-8", errors="replace")
                if ex.finished.done():
                    ex.finished.result()  # raises CopyTransportError if the connection broke
                    break
                ex.more.clear()
                await ex.more.wait()
            if pending:
                yield pending.rstrip(b"\r").decode("utf-8", errors="replace")
        finally:
            self.close()

    def close(self) -> None:
        """Give the connection back (response complete) or close it (abandoned mid-response)."""
        if self._released:
            return
        self._released = True
        finished = self._exchange.finished  # awaiting it from a cancelled task cancels it too
        complete = finished.done() and not finished.cancelled() and finished.exception() is None
        self._client._release(self._conn, reusable=complete)

    async def aclose(self) -> None:
        self.close()


async def _refuses_priority(response: CopyResponse) -> bool:
    """Whether a (complete, small) 400 answer is about the ``priority`` field; the body stays readable."""
    exchange = response._exchange
    try:
        await exchange.finished
    except CopyTransportError:
        return False
    return b"priority" in b"".join(exchange.chunks).lower()


class CopyClient:
    """Pooled keep-alive connections to one copy at ``host:port``."""

    def __init__(
        self, host: str, port: int, *, token: str | None = None, request_model: str | None = None
    ) -> None:
        self.host = host.strip("[]")
        self.port = port
        if token is not None and (not token or any(ch in token for ch in "\r\n")):
            raise ValueError("a copy token must be a non-empty header-safe string")
        # Sent on every request: the copy's secret, which only its gateways hold (None: a copy without one).
        self._auth_line = f"Authorization: Bearer {token}\r\n" if token else ""
        # The 'model' this copy answers to, when it is not the served name (a server that only
        # knows the folder it loaded): every request's 'model' is rewritten to it.
        self.request_model = request_model
        self._idle: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()
        self._closed = False
        self.takes_priority = True  # False once the copy refused the ``priority`` field

    async def request(self, method: str, path: str, payload: Any = None) -> CopyResponse:
        """Send a request; returns once the status line and headers arrived (body: see CopyResponse)."""
        if self.request_model is not None and isinstance(payload, dict) and "model" in payload:
            payload = {**payload, "model": self.request_model}
        with_priority = isinstance(payload, dict) and "priority" in payload
        if with_priority and not self.takes_priority:
            payload = {k: v for k, v in payload.items() if k != "priority"}
            with_priority = False
        response = await self._send(method, path, payload)
        if with_priority and response.status_code == 400 and await _refuses_priority(response):
            response.close()
            self.takes_priority = False
            return await self.request(method, path, payload)
        return response

    async def _send(self, method: str, path: str, payload: Any) -> CopyResponse:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"{self._auth_line}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        for attempt in (0, 1):
            conn = await self._connection()
            exchange = _Exchange()
            conn.exchange = exchange
            assert conn.transport is not None
            try:
                conn.transport.write(head + body)
                status = await exchange.headers_done
            except CopyTransportError:
                self._release(conn, reusable=False)
                if attempt == 0 and conn.reused and not exchange.got_bytes:
                    continue  # the copy closed an idle connection just as we reused it
                raise
            except BaseException:
                self._release(conn, reusable=False)
                raise
            return CopyResponse(self, conn, exchange, status)
        raise AssertionError("unreachable")  # pragma: no cover

    async def post_json(self, path: str, payload: Any) -> tuple[int, bytes]:
        """POST ``payload`` as JSON; the status and the whole body."""
        response = await self.request("POST", path, payload)
        return response.status_code, await response.aread()

    async def get(self, path: str) -> tuple[int, bytes]:
        response = await self.request("GET", path)
        return response.status_code, await response.aread()

    async def _connection(self) -> _Connection:
        if self._closed:
            raise CopyTransportError("the client of this copy is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used: least likely to have been closed
            if conn.closed or now - conn.idle_since > IDLE_SECONDS:
                self._discard(conn)
                continue
            conn.reused = True
            return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise CopyTransportError(
                f"connecting to {self.host}:{self.port} took over {CONNECT_TIMEOUT_SECONDS:g} s"
            ) from None
        except ConnectionRefusedError as exc:
            raise CopyRefusedError(f"cannot connect to {self.host}:{self.port} ({exc})") from None
        except OSError as exc:
            raise CopyTransportError(f"cannot connect to {self.host}:{self.port} ({exc})") from None
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection, *, reusable: bool) -> None:
        conn.exchange = None
        if reusable and not conn.closed and not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.closed = True
        self._all.discard(conn)
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._all):
            self._discard(conn)
        self._idle.clear()
