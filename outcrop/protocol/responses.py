"""The OpenAI Responses API (``POST /v1/responses``), stateless, translated to the copy's chat completions.

Shapes are the ``openai`` Python SDK's (openai/types/responses/): a request's ``input`` (a string or
a list of ``message`` / ``function_call`` / ``function_call_output`` items), ``instructions``,
function ``tools`` (flat: ``{"type": "function", "name", "parameters"}``), ``tool_choice``,
``text.format`` and ``max_output_tokens`` become one chat body; the chat answer becomes a
``response`` object with ``message`` and ``function_call`` output items; a chat stream becomes
the Responses event sequence (``response.created`` ... ``response.completed``) that the SDK's
``responses.stream`` helper accumulates.

Stateless: nothing is stored (``store`` is always reported false), so ``previous_response_id``,
``conversation`` and ``item_reference`` items are refused with a 400 saying to send the whole
conversation in ``input``. Hosted tools (web search, file search, ...) are refused: the model
only calls functions the caller runs. Pure; unit-tested in tests/api/test_responses_protocol.py.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from outcrop.errors import InvalidRequestError
from outcrop.protocol import tools

# Used when the request gives no max_output_tokens (the chat surface's Bedrock-style default).
DEFAULT_MAX_OUTPUT_TOKENS = 512
# Why 1,000,000: above any context length a copy serves; the copy checks the real limit.
MAX_OUTPUT_TOKENS = 1_000_000
# Members that need stored state (which a stateless server has none of): refused, with the fix.
STATEFUL = {
    "previous_response_id": "send the whole conversation in 'input' instead (this server stores no responses)",
    "conversation": "send the whole conversation in 'input' instead (this server stores no conversations)",
    "prompt": "put the prompt's text in 'instructions' and 'input' (this server stores no prompts)",
}
_TEXT_PARTS = ("input_text", "output_text", "text", "refusal")


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, default=str)[:80]
    except ValueError:
        return "(a number too long to show)"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class ResponsesRequest:
    """A Responses body, checked: the copy's chat body and what the response object echoes back."""

    model: str
    chat: dict[str, Any]
    stream: bool
    echo: dict[str, Any] = field(default_factory=dict)


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(
            f'{where} must be a string or a list of {{"type": "input_text", "text": "..."}} parts.',
            param=where,
        )
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text", part.get("refusal")), str):
            raise InvalidRequestError(
                f"{where}[{j}] is a {_shown(kind)} part; imported models take text only "
                '({"type": "input_text", "text": "..."}).',
                param=f"{where}[{j}]",
            )
        texts.append(part.get("text", part.get("refusal")))
    return "".join(texts)


def _input_messages(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError(
            'input must be a string or a non-empty list of items like {"role": "user", "content": "Hello"}.',
            param="input",
        )
    messages: list[dict[str, Any]] = []
    called: set[str] = set()
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(
                f"{where} must be an object (a message or a function call item).", param=where
            )
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequestError(
                    f"{where}.role is {_shown(role)}; it must be user, system, developer or assistant.",
                    param=f"{where}.role",
                )
            messages.append({"role": role, "content": _text_of(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequestError(f"{where}.call_id must be the call's id.", param=f"{where}.call_id")
            tools.check_name(name, f"{where}.name")
            if not isinstance(arguments, str):
                raise InvalidRequestError(
                    f"{where}.arguments must be the call's arguments as a JSON string.",
                    param=f"{where}.arguments",
                )
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and (last.get("tool_calls") or last["content"])
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            called.add(call_id)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in called:
                raise InvalidRequestError(
                    f"{where}.call_id is {_shown(call_id)}, but no function_call item before it has that "
                    "call_id. Send the function_call item and then its output.",
                    param=f"{where}.call_id",
                )
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        elif kind == "reasoning":
            continue  # another model's reasoning summary: nothing this model can use
        elif kind == "item_reference":
            raise InvalidRequestError(
                f"{where} is an item_reference; this server stores no items. Send the item itself.",
                param=where,
            )
        else:
            raise InvalidRequestError(
                f"{where}.type is {_shown(kind)}; send message, function_call or function_call_output items.",
                param=f"{where}.type",
            )
    return messages


def _tools(raw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(raw, list):
        raise InvalidRequestError(
            'tools must be a list like [{"type": "function", "name": "get_weather", "parameters": {...}}].',
            param="tools",
        )
    out, names = [], []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise InvalidRequestError(
                f"{where}.type is {_shown(kind)}; only function tools are served here (hosted tools such as "
                'web_search and file_search are not). Send {"type": "function", "name": ..., "parameters": {...}}.',
                param=f"{where}.type",
            )
        name = tools.check_name(tool.get("name"), f"{where}.name")
        if name in names:
            raise InvalidRequestError(
                f"{where}.name '{name}' is used by another tool too.", param=f"{where}.name"
            )
        names.append(name)
        function: dict[str, Any] = {"name": name}
        if tool.get("parameters") is not None:
            function["parameters"] = tools.check_schema(tool["parameters"], f"{where}.parameters")
        for key in ("description", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out, names


def _tool_choice(raw: Any, names: list[str]) -> Any:
    if raw in tools.TOOL_CHOICES:
        if raw == "required" and not names:
            raise InvalidRequestError(
                "tool_choice is 'required' but the request has no tools.", param="tool_choice"
            )
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        if raw["name"] not in names:
            raise InvalidRequestError(
                f"tool_choice names the function '{raw['name']}', which is not in tools "
                f"({', '.join(names) or 'the request has no tools'}).",
                param="tool_choice.name",
            )
        return {"type": "function", "function": {"name": raw["name"]}}
    raise InvalidRequestError(
        f"tool_choice is {_shown(raw)}; use 'none', 'auto', 'required' or "
        '{"type": "function", "name": "..."} (hosted tool choices are not served).',
        param="tool_choice",
    )


def _text_format(raw: Any) -> dict[str, Any] | None:
    """``text`` ({"format": {...}}) as the chat body's response_format (None for plain text)."""
    if raw is None:
        return None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema" or not isinstance(fmt, dict):
        raise InvalidRequestError(
            f'text.format is {_shown(fmt)}; use {{"type": "text"}}, {{"type": "json_object"}} or '
            '{"type": "json_schema", "name": ..., "schema": {...}}.',
            param="text.format",
        )
    spec: dict[str, Any] = {
        "name": tools.check_name(fmt.get("name"), "text.format.name"),
        "schema": tools.check_schema(fmt.get("schema"), "text.format.schema"),
    }
    for key in ("strict", "description"):
        if fmt.get(key) is not None:
            spec[key] = fmt[key]
    return {"type": "json_schema", "json_schema": spec}


def _number(body: dict[str, Any], key: str, low: float, high: float, integer: bool = False) -> Any:
    value = body[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and (not integer or value.is_integer())
    if not ok or value < low or value > high:
        kind = "an integer" if integer else "a number"
        raise InvalidRequestError(
            f"{key} is {_shown(value)}; it must be {kind} between {low} and {high}.", param=key
        )
    return int(value) if integer else float(value)


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """A Responses body as the copy's chat body; a 400 naming the first fault."""
    for key, fix in STATEFUL.items():
        if body.get(key) is not None:
            raise InvalidRequestError(f"'{key}' is not supported: {fix}.", param=key)
    if body.get("background"):
        raise InvalidRequestError(
            "background responses are not supported (nothing is stored to poll); leave 'background' out.",
            param="background",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "'model' is required: the name of an imported model (see GET /v1/models).", param="model"
        )
    if "input" not in body:
        raise InvalidRequestError("'input' is required: a string or a list of items.", param="input")
    messages = _input_messages(body["input"])
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequestError("instructions must be a string.", param="instructions")
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"messages": messages, "max_tokens": DEFAULT_MAX_OUTPUT_TOKENS}
    echo: dict[str, Any] = {
        "instructions": instructions,
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "user": body.get("user"),
    }
    names: list[str] = []
    if body.get("tools"):
        chat["tools"], names = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"], names)
    if body.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    response_format = _text_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = _number(body, "max_output_tokens", 1, MAX_OUTPUT_TOKENS, integer=True)
    for key, high in (("temperature", 2.0), ("top_p", 1.0)):
        if body.get(key) is not None:
            chat[key] = _number(body, key, 0.0, high)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be true or false.", param="stream")
    chat["stream"] = stream
    tools.check_chat_tools(chat)  # the chat surface's checks too (parallel_tool_calls, tool messages)
    return ResponsesRequest(model=model, chat=chat, stream=stream, echo=echo)


# -- answers ----------------------------------------------------------------------------


def usage(raw: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    request: ResponsesRequest,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage_: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": request.model,
        "output": output,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "truncation": "disabled",
        "usage": usage_,
        **request.echo,
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(request: ResponsesRequest, resp: dict[str, Any]) -> dict[str, Any]:
    """A copy's chat completion as a ``response`` object."""
    choice = resp["choices"][0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content"):
        output.append(_message_item(_new_id("msg"), message["content"], "completed"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            _call_item(
                _new_id("fc"),
                call.get("id") or _new_id("call"),
                function.get("name", ""),
                function.get("arguments") or "{}",
                "completed",
            )
        )
    if not output:
        output.append(_message_item(_new_id("msg"), "", "completed"))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    created = int(resp.get("created") or time.time())
    return response_object(request, _new_id("resp"), created, status, output, usage(resp.get("usage") or {}))


class ResponsesStreamTranslator:
    """Chat-completion chunks -> the Responses API's stream events (each with its ``sequence_number``).

    A text answer is one ``message`` item with one ``output_text`` part; each tool call is a
    ``function_call`` item. An item is opened (``output_item.added``) when its first delta
    arrives and closed (``...done`` events) when the next item opens or the answer ends.
    """

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.response_id = _new_id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.items: list[dict[str, Any]] = []  # output items, as the final response lists them
        self.open: int | None = None  # output index of the item now open
        self.calls: dict[int, int] = {}  # the chat tool call's index -> its output index
        self.finish: str | None = None

    def _event(self, kind: str, **payload: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        snapshot = response_object(self.request, self.response_id, self.created_at, "in_progress", [], None)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _close(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        item = self.items[index]
        item["status"] = "completed"
        events = []
        if item["type"] == "message":
            part = item["content"][0]
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events.append(self._event("response.output_text.done", **common, text=part["text"], logprobs=[]))
            events.append(self._event("response.content_part.done", **common, part=part))
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def _open(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self.open = len(self.items)
        self.items.append(item)
        added = {**item, "content": []} if item["type"] == "message" else dict(item)
        events.append(self._event("response.output_item.added", output_index=self.open, item=added))
        if item["type"] == "message":
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self.open,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        return events

    def feed(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            if self.open is None or self.items[self.open]["type"] != "message":
                events += self._open(_message_item(_new_id("msg"), "", "in_progress"))
            assert self.open is not None
            item = self.items[self.open]
            item["content"][0]["text"] += text
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=self.open,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
        for call in delta.get("tool_calls") or []:
            position = int(call.get("index", 0))
            function = call.get("function") or {}
            if position not in self.calls:
                call_id = call.get("id") or _new_id("call")
                events += self._open(
                    _call_item(_new_id("fc"), call_id, function.get("name") or "", "", "in_progress")
                )
                assert self.open is not None
                self.calls[position] = self.open
            index = self.calls[position]
            fragment = function.get("arguments")
            if fragment:
                self.items[index]["arguments"] += fragment
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=self.items[index]["id"],
                        output_index=index,
                        delta=fragment,
                    )
                )
        self.finish = choice.get("finish_reason") or self.finish
        return events

    def end(self, usage_: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        if not self.items:  # nothing was said: one empty message, as a non-streamed answer has
            events += self._open(_message_item(_new_id("msg"), "", "in_progress"))
            events += self._close()
        status = "incomplete" if self.finish == "length" else "completed"
        final = response_object(
            self.request, self.response_id, self.created_at, status, self.items, usage(usage_)
        )
        # Always ``response.completed`` (its response's status and incomplete_details tell a cut answer):
        # the SDK's responses.stream helper and the Agents SDK take the final response from it only.
        events.append(self._event("response.completed", response=final))
        return events

    def error(self, body: dict[str, Any]) -> dict[str, Any]:
        """An error after the stream began: OpenAI's ``error`` event (the SDK raises it as APIError)."""
        error = body["error"]
        return self._event(
            "error", code=error.get("code"), message=error["message"], param=error.get("param"), error=error
        )
