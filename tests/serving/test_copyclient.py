"""The router's HTTP client against small real servers on loopback (asyncio) that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from outcrop.serving.copyclient import CopyClient, CopyTransportError

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Both event loops: the gateway runs under uvicorn, which picks uvloop when installed."""
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback server running ``handler`` per connection; yields its port and a connection counter."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield port, connections


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def ok(body: bytes, *extra: str) -> bytes:
    headers = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


async def keep_alive_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        body = await read_request(reader)
        writer.write(ok(body))
        await writer.drain()


async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with server(keep_alive_echo) as (port, connections):
        client = CopyClient("127.0.0.1", port)
        for i in range(20):
            assert await client.post_json("/x", {"i": i}) == (200, b'{"i":%d}' % i)
        assert len(connections) == 1
        await client.aclose()


async def test_a_copy_that_refuses_the_priority_field_gets_requests_without_it() -> None:
    received: list[bytes] = []

    async def vllm_without_priority_policy(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            body = await read_request(reader)
            received.append(body)
            if b'"priority"' in body:
                error = b'{"error":{"message":"Got priority 10 but Priority scheduling is not enabled."}}'
                writer.write(ok(error).replace(b"200 OK", b"400 Bad Request"))
            else:
                writer.write(ok(body))
            await writer.drain()

    async with server(vllm_without_priority_policy) as (port, _):
        client = CopyClient("127.0.0.1", port)
        assert await client.post_json("/x", {"i": 1, "priority": 10}) == (200, b'{"i":1}')
        assert await client.post_json("/x", {"i": 2, "priority": 10}) == (200, b'{"i":2}')
        assert received == [b'{"i":1,"priority":10}', b'{"i":1}', b'{"i":2}']  # asked once, then never
        await client.aclose()


async def test_other_400_answers_to_a_request_with_priority_are_returned_as_they_are() -> None:
    async def rejects(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(
                ok(b'{"error":{"message":"max_tokens is too large"}}').replace(b"200 OK", b"400 Bad")
            )
            await writer.drain()

    async with server(rejects) as (port, connections):
        client = CopyClient("127.0.0.1", port)
        assert await client.post_json("/x", {"priority": 10}) == (
            400,
            b'{"error":{"message":"max_tokens is too large"}}',
        )
        assert client.takes_priority and len(connections) == 1
        await client.aclose()


async def test_an_idle_connection_the_server_closed_is_replaced_transparently() -> None:
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        writer.write(ok(body))  # keep-alive promised, then closed: what an idle timeout does
        await writer.drain()

    async with server(one_per_connection) as (port, connections):
        client = CopyClient("127.0.0.1", port)
        for _ in range(3):
            assert (await client.post_json("/x", {}))[0] == 200
            await asyncio.sleep(0.05)
        assert len(connections) == 3
        await client.aclose()


async def test_streamed_lines_arrive_as_the_server_sends_them() -> None:
    release = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
        )
        first = b"data: 1\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await release.wait()
        rest = "data: ✓\r\n\r\ndata: [DONE]\n\n".encode()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await writer.drain()
        await asyncio.sleep(1)

    async with server(chunked) as (port, _):
        client = CopyClient("127.0.0.1", port)
        response = await client.request("POST", "/s", {"stream": True})
        lines = response.aiter_lines()
        assert await anext(lines) == "data: 1"  # before the server sent the rest
        release.set()
        assert [line async for line in lines] == ["", "data: ✓", "", "data: [DONE]", ""]
        await client.aclose()


async def test_a_body_delimited_by_the_end_of_the_connection_is_read_whole() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"ok": true}')
        await writer.drain()

    async with server(http10) as (port, _):
        client = CopyClient("127.0.0.1", port)
        assert await client.get("/health") == (200, b'{"ok": true}')
        await client.aclose()


async def test_a_connection_closed_mid_response_is_a_transport_error() -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()

    async with server(truncated) as (port, _):
        client = CopyClient("127.0.0.1", port)
        with pytest.raises(CopyTransportError, match="closed the connection"):
            await client.post_json("/x", {})
        await client.aclose()


async def test_a_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CopyClient("127.0.0.1", port)
    with pytest.raises(CopyTransportError, match="cannot connect"):
        await client.post_json("/x", {})


async def test_abandoning_a_response_closes_its_connection_so_the_copy_sees_the_disconnect() -> None:
    saw_eof = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # returns b"" when the client hangs up
        saw_eof.set()

    async with server(slow) as (port, _):
        client = CopyClient("127.0.0.1", port)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                response = await client.request("POST", "/s", {})
                await response.aread()
        await asyncio.wait_for(saw_eof.wait(), 5)
        await client.aclose()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"error": {"message": "bad max_tokens", "type": "invalid_request_error"}}, "bad max_tokens"),
        ({"message": "flat"}, "flat"),
        ({"detail": "Server is pinned to '/models/x'"}, "Server is pinned to '/models/x'"),  # FastAPI servers
        ({"detail": [{"loc": ["body"]}]}, None),
        ("not an object", None),
    ],
)
def test_copy_errors_are_read_in_every_shape_servers_send(payload: object, message: str | None) -> None:
    from outcrop.serving.protocol import CopyErrorResponse

    parsed = CopyErrorResponse.parse(payload)
    assert (parsed.error.message if parsed else None) == message


async def test_every_request_carries_the_copys_token_as_a_bearer_header() -> None:
    heads: list[bytes] = []

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head.lower())
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(ok(b"{}"))
            await writer.drain()

    async with server(recording) as (port, _):
        client = CopyClient("127.0.0.1", port, token="s3cret-Token_1")
        await client.post_json("/v1/completions", {"prompt": "x"})
        await client.get("/health")
        await client.aclose()
        anonymous = CopyClient("127.0.0.1", port)
        await anonymous.get("/health")
        await anonymous.aclose()
    assert [b"authorization: bearer s3cret-token_1\r\n" in h for h in heads] == [True, True, False]


@pytest.mark.parametrize("token", ["", "a\r\nX-Injected: 1"])
def test_a_token_that_is_empty_or_would_split_the_header_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="header-safe"):
        CopyClient("127.0.0.1", 1, token=token)
