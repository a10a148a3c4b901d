"""The gateway's transport as an attacker meets it: bodies never read before authentication nor past
the limit, SigV4 scope and payload-hash rules, slow clients dropped, our own request ids."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.api.bodylimit import MAX_BODY_BYTES
from outcrop.cli.main import is_loopback
from tests.conftest import TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY, ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    # Short read limits so the slow-client tests take seconds.
    return start_server(
        OUTCROP_SERVER__HEADER_TIMEOUT_SECONDS="1.5", OUTCROP_SERVER__BODY_IDLE_TIMEOUT_SECONDS="1.5"
    )


def _signed(
    url: str,
    body: bytes,
    *,
    region: str = "us-east-1",
    key: str = TEST_ACCESS_KEY_ID,
    secret: str = TEST_SECRET_ACCESS_KEY,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(key, secret), "bedrock", region).add_auth(request)
    headers = dict(request.headers.items())
    headers.update(extra or {})
    return headers


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _settled_rss_bytes(pid: int, deadline_seconds: float = 30.0) -> int:
    """The process's RSS once it has stopped growing (under 2 MB over one second)."""
    last = _rss_bytes(pid)
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _rss_bytes(pid)
        if abs(now - last) < 2_000_000:
            return now
        last = now
    return last


def _chunks(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    piece = b"x" * chunk
    sent = 0
    while sent < total:
        yield piece
        sent += chunk


def test_a_fake_signature_with_a_huge_chunked_body_is_refused_without_reading_it(
    server: ServerProcess,
) -> None:
    assert server.proc is not None
    url = f"{server.url}/model/anything/invoke"
    for key, secret in (("OCKAFAKEFAKE", TEST_SECRET_ACCESS_KEY), (TEST_ACCESS_KEY_ID, "wrong-secret")):
        # Warm up: the first requests import and cache what this route needs.
        httpx.post(url, content=b"{}", headers=_signed(url, b"{}", key=key, secret=secret))
    # The server finishes importing in the background (transformers and what it pulls in) during
    # its first seconds; measure only once its memory has settled.
    before = _settled_rss_bytes(server.proc.pid)
    # An unknown key: refused on the headers, before the body.
    headers = _signed(url, b"{}", key="OCKAFAKEFAKE")
    headers.pop("Content-Length", None)
    try:
        response = httpx.post(url, content=_chunks(300 * 2**20), headers=headers, timeout=60)
        assert response.status_code == 403
        assert response.headers["x-amzn-errortype"].startswith("UnrecognizedClientException")
    except httpx.TransportError:
        pass  # the server answered and closed while the client was still sending: also fine
    # A known key with a bad signature and a body over the limit: cut off at the limit.
    headers = _signed(url, b"{}", secret="wrong-secret")
    headers.pop("Content-Length", None)
    try:
        response = httpx.post(url, content=_chunks(300 * 2**20), headers=headers, timeout=60)
        assert response.status_code == 400 and "limit" in response.json()["message"]
    except httpx.TransportError:
        pass
    grew = _rss_bytes(server.proc.pid) - before
    print(f"RSS grew by {grew / 1e6:.0f} MB for 2 x 300 MB bodies")
    assert grew < 4 * MAX_BODY_BYTES, f"the server grew by {grew / 1e6:.0f} MB"
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_content_length_over_the_limit_is_refused_before_the_body(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TEST_API_KEY.encode() + b"\r\n"
            b"Content-Length: 400000000\r\n\r\n{"
        )
        answer = _read_answer(sock).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 400") and "the limit is 25,000,000" in answer


def _read_answer(sock: socket.socket) -> bytes:
    """The whole HTTP answer: the headers and a body of content-length bytes (one recv may hold
    only the headers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_sigv4_scoped_to_another_region_is_refused(server: ServerProcess) -> None:
    url = f"{server.url}/imported-models"
    for region in ("zz-nowhere-9", "eu-west-1"):
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(Credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY), "bedrock", region).add_auth(
            request
        )
        response = httpx.get(url, headers=dict(request.headers.items()))
        assert response.status_code == 403
        assert response.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
        assert "us-east-1" in response.json()["message"]  # the fix: the server's region


def test_an_unsigned_payload_hash_header_cannot_change_the_body(server: ServerProcess) -> None:
    url = f"{server.url}/model/anything/invoke"
    body = json.dumps({"prompt": "signed", "max_gen_len": 1}).encode()
    headers = _signed(url, body, extra={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    response = httpx.post(url, content=b'{"prompt": "swapped"}', headers=headers)
    assert response.status_code == 403
    assert "x-amz-content-sha256" in response.json()["message"]
    # Signed, a payload hash must match the body.
    headers = _signed(url, body, extra={})
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    )
    SigV4Auth(Credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY), "bedrock", "us-east-1").add_auth(
        request
    )
    response = httpx.post(url, content=b'{"prompt": "swapped"}', headers=dict(request.headers.items()))
    assert response.status_code == 403


def _dropped_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""  # closed by the server
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_slow_clients_are_dropped(server: ServerProcess) -> None:
    # Headers never finished (slowloris).
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        assert _dropped_within(sock, 30)
    # A connection that never sends anything.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        assert _dropped_within(sock, 30)
    # A body that stops half-way.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TEST_API_KEY.encode()
            + b'\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt": '
        )
        started = time.monotonic()
        sock.settimeout(30)
        try:
            data = sock.recv(65536)
            while data:  # an error answer may come first; then the close
                data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            pass
        assert time.monotonic() - started < 30
    assert httpx.get(f"{server.url}/health").status_code == 200  # the server itself is fine


def test_a_callers_request_id_is_never_echoed(server: ServerProcess) -> None:
    response = httpx.get(
        f"{server.url}/imported-models",
        headers={"x-amzn-requestid": "attacker-controlled-id", "authorization": f"Bearer {TEST_API_KEY}"},
    )
    assert response.status_code == 200
    assert response.headers["x-amzn-requestid"] != "attacker-controlled-id"
    audit = (
        (server.data_dir / "audit" / "audit.jsonl").read_text()
        if (server.data_dir / "audit").exists()
        else ""
    )
    assert "attacker" not in audit


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.evil.example", False),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_insecure_no_auth_counts_only_real_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
