"""A null model copy: a real process speaking the copy contract that answers at once.

    python -m outcrop.testing.nullcopy --port 8001 [--served-name NAME] [--delay-ms 0]

It serves ``/v1/completions`` and ``/v1/chat/completions`` (SSE with ``stream: true``),
``/v1/tokenize``, ``/health`` and ``/metrics`` with fixed answers, so tests and the gateway
benchmark measure the router, not a model. Started by the ``command`` launcher, it enters
through the production seam. Knobs for tests:

- ``--delay-ms``: wait before answering (and between stream chunks with ``--chunk-delay-ms``);
- ``--startup-delay-ms``: ``/health`` answers 503 this long, like a loading model;
- ``--fail-start``: exit 1 at once with a message, like a model that cannot load;
- ``--crash-file PATH``: if PATH exists when a request arrives, delete it and die (exit 1),
  ``--crash-point before`` (before answering) or ``mid_stream`` (after the first SSE chunk);
- ``--max-model-len``: a ``max_tokens`` above it is answered 400, like a context-length error;
- ``--echo``: answer with the prompt (or the last message's text) instead of the fixed text, streamed
  word by word, so tests see what reached the copy and can send text back through the gateway;
- ``--request-log PATH``: append each generation request's JSON body to PATH, one line each, so
  tests can count (and read) what reached the copy.

Each answer carries ``system_fingerprint = "nullcopy:<port>"`` so tests see which copy answered.
Like Outcrop's worker, it requires its launcher's token (``OUTCROP_COPY_TOKEN``) in
``Authorization: Bearer`` on every route but ``/health`` (:mod:`outcrop.engine.auth`), so tests
through it exercise the gateway's side of that contract too.
SIGTERM drains in-flight requests and exits 0 (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

from outcrop.engine.auth import protect
from outcrop.envs import copy_token

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TEXT_CHUNKS = ("null", " copy", " answer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m outcrop.testing.nullcopy", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--served-name", default="null")
    p.add_argument("--model-dir", default=None, help="Accepted and ignored (templates pass it).")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    p.add_argument("--startup-delay-ms", type=float, default=0.0)
    p.add_argument("--fail-start", action="store_true")
    p.add_argument("--crash-file", type=Path, default=None)
    p.add_argument("--crash-point", choices=["before", "mid_stream"], default="before")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--echo", action="store_true")
    p.add_argument("--request-log", type=Path, default=None)
    return p.parse_args(argv)


class NullCopy:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ready_at = time.monotonic() + args.startup_delay_ms / 1000
        self.fingerprint = f"nullcopy:{args.port}"
        self.requests = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/health":
            ready = time.monotonic() >= self.ready_at
            body = {"status": "ready" if ready else "loading", "model": self.args.served_name}
            await _json(send, 200 if ready else 503, body)
            return
        if method == "GET" and path == "/metrics":
            text = f"nullcopy_requests_total {self.requests}\n".encode()
            await _raw(send, 200, text, b"text/plain; version=0.0.4")
            return
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions", "/v1/tokenize"):
            await _json(send, 404, _error(f"No route {method} {path}.", "invalid_request_error"))
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            await _json(send, 400, _error("The body is not JSON.", "invalid_request_error"))
            return
        if time.monotonic() < self.ready_at:
            await _json(send, 503, _error("Model is loading.", "service_unavailable"))
            return
        self.requests += 1
        if self.args.request_log is not None and path != "/v1/tokenize":
            with self.args.request_log.open("a", encoding="utf-8") as log:
                log.write(json.dumps(body) + "\n")
        if self.args.delay_ms:
            await asyncio.sleep(self.args.delay_ms / 1000)
        if self.args.crash_point == "before":
            self._maybe_crash()
        if path == "/v1/tokenize":
            prompt = body.get("prompt") or json.dumps(body.get("messages"))
            tokens = [ord(ch) for ch in str(prompt)]
            await _json(send, 200, {"tokens": tokens, "count": len(tokens), "max_model_len": 2048})
            return
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        if max_tokens > self.args.max_model_len:
            detail = (
                f"This request needs 1 prompt tokens + {max_tokens} max_tokens = {max_tokens + 1} tokens, but "
                f"the model's context length is {self.args.max_model_len}. Shorten the prompt or lower max_tokens."
            )
            await _json(
                send, 400, _error(detail, "invalid_request_error", "max_tokens", "context_length_exceeded")
            )
            return
        chat = path == "/v1/chat/completions"
        pieces = _echo_pieces(body) if self.args.echo else TEXT_CHUNKS
        if body.get("stream"):
            await self._stream(send, chat, pieces)
            return
        await _json(send, 200, self._answer(chat, pieces))

    def _maybe_crash(self) -> None:
        crash = self.args.crash_file
        if crash is not None and crash.exists():
            crash.unlink(missing_ok=True)
            print("nullcopy: crash requested by --crash-file", file=sys.stderr, flush=True)
            os._exit(1)

    def _answer(self, chat: bool, pieces: tuple[str, ...] = TEXT_CHUNKS) -> dict[str, Any]:
        text = "".join(pieces)
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": len(pieces),
            "total_tokens": 1 + len(pieces),
        }
        common = {
            "id": f"nullcopy-{self.requests}",
            "created": int(time.time()),
            "model": self.args.served_name,
            "system_fingerprint": self.fingerprint,
            "usage": usage,
        }
        if chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}
            return {**common, "object": "chat.completion", "choices": [choice]}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        return {**common, "object": "text_completion", "choices": [choice]}

    async def _stream(self, send: Send, chat: bool, pieces: tuple[str, ...] = TEXT_CHUNKS) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            finish = "length" if last else None
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}
            chunk = {
                "id": f"nullcopy-{self.requests}",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.args.served_name,
                "system_fingerprint": self.fingerprint,
                "choices": [choice],
            }
            data = f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()
            await send({"type": "http.response.body", "body": data, "more_body": True})
            if i == 0 and self.args.crash_point == "mid_stream":
                await asyncio.sleep(0.05)  # let the first chunk reach the router
                self._maybe_crash()
            if self.args.chunk_delay_ms:
                await asyncio.sleep(self.args.chunk_delay_ms / 1000)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _echo_pieces(body: dict[str, Any]) -> tuple[str, ...]:
    """The prompt, or the last message's text, split after each space (``--echo``)."""
    text = body.get("prompt")
    if not isinstance(text, str):
        messages = body.get("messages") or [{}]
        content = messages[-1].get("content") if isinstance(messages[-1], dict) else ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = content if isinstance(content, str) else ""
    words = text.split(" ")
    pieces = (*(w + " " for w in words[:-1]), words[-1])
    return tuple(p for p in pieces if p) or ("",)


def _error(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def _raw(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: Any) -> None:
    await _raw(send, status, json.dumps(payload, separators=(",", ":")).encode(), b"application/json")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fail_start:
        print(
            f"error: nullcopy cannot serve {args.model_dir}: --fail-start was given",
            file=sys.stderr,
            flush=True,
        )
        return 1
    app = protect(NullCopy(args), copy_token())
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
