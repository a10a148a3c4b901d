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
  tests can count (and read) what reached the copy;
- ``--no-tools``: a chat request with ``tools`` is answered 400 "This model doesn't support tool
  use.", like a model whose chat template takes no tools.

Tools and structured output follow vLLM's contract (docs/tools.md), deterministically:

- ``tools`` with ``tool_choice`` a named function: one call to it; ``required``: a call to every
  tool (to the first only with ``parallel_tool_calls: false``); ``auto`` (or absent): like
  ``required``, unless the last message is a ``tool`` result, which is answered with text
  (``finish_reason: "stop"``); ``none``: text. Arguments are synthesized to satisfy each
  tool's parameter schema (:mod:`outcrop.testing.json_sample`); ``finish_reason: "tool_calls"``.
- ``response_format`` ``json_schema`` (or ``guided_json``, ``structured_outputs.json``): a JSON
  text valid against the schema; ``json_object``: a small JSON object; ``guided_choice``: its
  first choice. Streamed, tool calls arrive as vLLM sends them: ``delta.tool_calls`` with
  index, id, type and ``function.name`` first, then ``function.arguments`` fragments.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from outcrop.engine.auth import protect
from outcrop.envs import copy_token
from outcrop.testing.json_sample import sample

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
    p.add_argument("--no-tools", action="store_true")
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
        if chat and body.get("tools") and self.args.no_tools:
            await _json(
                send, 400, _error("This model doesn't support tool use.", "invalid_request_error", "tools")
            )
            return
        if self.args.echo and not body.get("tools"):  # tool calls are answered as without --echo
            pieces = _echo_pieces(body)
            reply = Reply("".join(pieces), pieces=pieces)
        else:
            reply = _reply(body, self.requests) if chat else Reply("".join(TEXT_CHUNKS))
        if body.get("stream"):
            await self._stream(send, chat, reply)
            return
        await _json(send, 200, self._answer(chat, reply))

    def _maybe_crash(self) -> None:
        crash = self.args.crash_file
        if crash is not None and crash.exists():
            crash.unlink(missing_ok=True)
            print("nullcopy: crash requested by --crash-file", file=sys.stderr, flush=True)
            os._exit(1)

    def _answer(self, chat: bool, reply: Reply) -> dict[str, Any]:
        text = reply.text or ""
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": len(reply.pieces or TEXT_CHUNKS),
            "total_tokens": 1 + len(reply.pieces or TEXT_CHUNKS),
        }
        common = {
            "id": f"nullcopy-{self.requests}",
            "created": int(time.time()),
            "model": self.args.served_name,
            "system_fingerprint": self.fingerprint,
            "usage": usage,
        }
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.tool_calls:
                message["tool_calls"] = reply.tool_calls
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish}
            return {**common, "object": "chat.completion", "choices": [choice]}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reply.finish}
        return {**common, "object": "text_completion", "choices": [choice]}

    async def _stream(self, send: Send, chat: bool, reply: Reply) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        deltas = reply.deltas()
        for i, delta in enumerate(deltas):
            last = i == len(deltas) - 1
            finish = reply.finish if last else None
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {
                    "index": 0,
                    "text": delta.get("content", ""),
                    "logprobs": None,
                    "finish_reason": finish,
                }
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


@dataclass
class Reply:
    """What the null copy answers: text, or tool calls (OpenAI's shape), and the finish reason."""

    text: str | None
    tool_calls: list[dict[str, Any]] | None = None
    finish: str = "length"
    pieces: tuple[str, ...] | None = None  # how the text streams (``--echo``: word by word)

    def deltas(self) -> list[dict[str, Any]]:
        """The answer as streamed chat deltas, in vLLM's order."""
        if self.tool_calls:
            out: list[dict[str, Any]] = []
            for i, call in enumerate(self.tool_calls):
                head = {"index": i, "id": call["id"], "type": "function"}
                out.append(
                    {
                        "tool_calls": [
                            {**head, "function": {"name": call["function"]["name"], "arguments": ""}}
                        ]
                    }
                )
                arguments = call["function"]["arguments"]
                half = len(arguments) // 2
                for piece in (arguments[:half], arguments[half:]):
                    out.append({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            return out
        if self.pieces is not None:
            return [{"content": piece} for piece in self.pieces]
        text = self.text or ""
        if text == "".join(TEXT_CHUNKS):
            return [{"content": piece} for piece in TEXT_CHUNKS]
        third = max(1, len(text) // 3)
        return [{"content": text[i : i + third]} for i in range(0, len(text), third)] or [{"content": ""}]


def _tool_schema(tool: dict[str, Any]) -> Any:
    return (tool.get("function") or {}).get("parameters") or {"type": "object", "properties": {}}


def _reply(body: dict[str, Any], request_number: int) -> Reply:
    """The deterministic chat answer for ``body`` (module docstring)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice", "auto" if tools else "none")
    messages = body.get("messages") or [{}]
    selected: list[dict[str, Any]] = []
    if tools and isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        selected = [t for t in tools if (t.get("function") or {}).get("name") == name]
    elif tools and (choice == "required" or (choice == "auto" and messages[-1].get("role") != "tool")):
        selected = tools if body.get("parallel_tool_calls") is not False else tools[:1]
    if selected:
        calls = [
            {
                "id": f"call_null_{request_number}_{i}",
                "type": "function",
                "function": {
                    "name": t["function"]["name"],
                    "arguments": json.dumps(sample(_tool_schema(t))),
                },
            }
            for i, t in enumerate(selected)
        ]
        return Reply(None, calls, "tool_calls")
    response_format = body.get("response_format") or {}
    outputs = body.get("structured_outputs") or {}
    schema = (
        (response_format.get("json_schema") or {}).get("schema")
        if response_format.get("type") == "json_schema"
        else None
    )
    schema = schema or body.get("guided_json") or outputs.get("json")
    if isinstance(schema, str):
        schema = json.loads(schema)
    if schema is not None:
        return Reply(json.dumps(sample(schema)), finish="stop")
    if response_format.get("type") == "json_schema" or response_format.get("type") == "json_object":
        return Reply(json.dumps({"answer": "".join(TEXT_CHUNKS)}), finish="stop")
    choices = body.get("guided_choice") or outputs.get("choice")
    if choices:
        return Reply(str(choices[0]), finish="stop")
    if tools and messages[-1].get("role") == "tool":
        return Reply("".join(TEXT_CHUNKS), finish="stop")
    return Reply("".join(TEXT_CHUNKS))


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
