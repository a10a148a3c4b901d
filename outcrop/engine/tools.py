"""Tool calls on the copy's chat surface, as vLLM's OpenAI server does them.

* ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` are checked here (``ToolRequest``).
* ``required`` or a named function: the output is constrained (``guided``) to the call(s),
  so even a weak model answers a parseable call whose arguments follow the function's
  parameter schema. A named function's output is its arguments object itself (streamed as
  argument fragments); ``required``'s is ``[{"name": ..., "arguments": {...}}, ...]``.
* ``auto``: the model writes calls in its own family's format, taken from its chat
  template, and a ``ToolParser`` finds them in the text: Qwen2.5/Qwen3 (Hermes)
  ``<tool_call>{...}</tool_call>``, Mistral ``[TOOL_CALLS][...]`` (and its newer
  ``[TOOL_CALLS]name[ARGS]{...}``), Llama 3.x ``{"name": ..., "parameters": ...}`` with or
  without ``<|python_tag|>``.
* ``ToolCallStream`` turns streamed text into content deltas and tool-call deltas.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from outcrop.engine.guided import Constraint
from outcrop.errors import InvalidRequestError

# OpenAI's rule for function names.
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Why 128: OpenAI's documented limit on tools per request.
MAX_TOOLS = 128
NO_TOOL_SUPPORT = "This model doesn't support tool use."


def new_call_id(short: bool = False) -> str:
    """OpenAI-style ``call_...``; ``short``: 9 letters and digits, which Mistral's chat templates
    require of the ids they render back (vLLM makes the same for Mistral models)."""
    if short:
        return uuid.uuid4().hex[:9]
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text
    id: str = field(default_factory=new_call_id)

    def as_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class ToolRequest:
    """A chat request's tools, validated: ``mode`` is none | auto | required | named."""

    tools: list[dict[str, Any]]  # the OpenAI tool objects, as the chat template receives them
    mode: str
    name: str | None = None  # the named function
    parallel: bool = True
    short_ids: bool = False  # the model's template wants 9-character call ids (Mistral)

    def new_id(self) -> str:
        return new_call_id(self.short_ids)

    def with_ids(self, calls: list[ToolCall]) -> list[ToolCall]:
        """``calls`` with ids in the style the model's template expects."""
        for call in calls:
            call.id = self.new_id()
        return calls

    def function(self, name: str) -> dict[str, Any]:
        return next(t["function"] for t in self.tools if t["function"]["name"] == name)

    @property
    def constrained(self) -> bool:
        return self.mode in ("required", "named")

    def parameter_constraints(self) -> list[Constraint]:
        """Each function's parameters a forced call may use, alone: compiled first, so that a bad
        schema's error names its tool and the place in its parameters."""
        return [
            Constraint(
                "json", json.dumps(parameters_schema(t["function"])), f"tools[{i}].function.parameters"
            )
            for i, t in enumerate(self.tools)
            if self.mode == "required" or t["function"]["name"] == self.name
        ]

    def constraint(self) -> Constraint:
        """The output constraint of a forced call (``required`` or ``named``)."""
        if self.mode == "named":
            return self.parameter_constraints()[0]
        calls = [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t["function"]["name"]},
                    "arguments": parameters_schema(t["function"]),
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in self.tools
        ]
        schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
        if not self.parallel:
            schema["maxItems"] = 1
        return Constraint("json", json.dumps(schema, sort_keys=False), "tools")

    def forced_calls(self, text: str) -> list[ToolCall]:
        """The calls in a forced (constrained) output; [] if it is incomplete (cut by max_tokens)."""
        try:
            value = json.loads(text)
        except ValueError:
            return []
        if self.mode == "named":
            assert self.name is not None
            return self.with_ids([ToolCall(self.name, json.dumps(value, ensure_ascii=False))])
        return self.with_ids(
            [
                ToolCall(c["name"], json.dumps(c["arguments"], ensure_ascii=False))
                for c in value
                if isinstance(c, dict) and "name" in c
            ]
        )


def parameters_schema(function: dict[str, Any]) -> dict[str, Any]:
    params = function.get("parameters")
    return params if isinstance(params, dict) and params else {"type": "object", "properties": {}}


def tool_request(
    tools: list[dict[str, Any]] | None, tool_choice: Any, parallel: bool | None
) -> ToolRequest | None:
    """Validate ``tools`` and ``tool_choice``; None when the request uses no tools."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise InvalidRequestError(
                "'tool_choice' is only allowed when 'tools' are specified; add 'tools' or leave 'tool_choice' out.",
                param="tool_choice",
            )
        return None
    if len(tools) > MAX_TOOLS:
        raise InvalidRequestError(
            f"'tools' has {len(tools)} entries; at most {MAX_TOOLS} are allowed.", param="tools"
        )
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise InvalidRequestError(
                f"tools[{i}] has type {kind!r}; only function tools ({{'type': 'function', 'function': "
                "{...}}) are supported.",
                param=f"tools[{i}].type",
            )
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequestError(
                f"tools[{i}].function is missing; send {{'name': ..., 'parameters': {{...}}}}.",
                param=f"tools[{i}].function",
            )
        name = fn.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise InvalidRequestError(
                f"tools[{i}].function.name {name!r} is invalid; use 1-64 letters, digits, '_' or '-'.",
                param=f"tools[{i}].function.name",
            )
        if name in names:
            raise InvalidRequestError(
                f"tools[{i}].function.name '{name}' is used by another tool; names must be unique.",
                param=f"tools[{i}].function.name",
            )
        names.add(name)
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequestError(
                f"tools[{i}].function.parameters must be a JSON schema object.",
                param=f"tools[{i}].function.parameters",
            )
        tool.setdefault("type", "function")
    parallel_calls = parallel if parallel is not None else True
    if tool_choice is None or tool_choice == "auto":
        return ToolRequest(tools, "auto", parallel=parallel_calls)
    if tool_choice in ("none", "required"):
        return ToolRequest(tools, tool_choice, parallel=parallel_calls)
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise InvalidRequestError(
                "tool_choice.function.name is missing; send {'type': 'function', 'function': {'name': ...}}.",
                param="tool_choice",
            )
        if name not in names:
            raise InvalidRequestError(
                f"tool_choice names function '{name}', which is not in 'tools' (available: "
                f"{', '.join(sorted(names))}).",
                param="tool_choice",
            )
        return ToolRequest(tools, "named", name=name, parallel=False)
    raise InvalidRequestError(
        f"Invalid 'tool_choice' {tool_choice!r}; use 'none', 'auto', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}.",
        param="tool_choice",
    )


def template_supports_tools(chat_template: str | None) -> bool:
    """Whether the model's chat template renders ``tools`` (else it would silently drop them)."""
    return bool(chat_template) and re.search(r"\btools\b", chat_template or "") is not None


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant tool calls with their arguments as objects, as HF chat templates expect (vLLM does
    the same); checks that every tool result answers an earlier call."""
    seen_ids: set[str] = set()
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        calls = m.get("tool_calls")
        if m["role"] == "assistant" and calls:
            if not isinstance(calls, list):
                raise InvalidRequestError(f"messages[{i}].tool_calls must be a list.", param="messages")
            fixed = []
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise InvalidRequestError(
                        f"messages[{i}].tool_calls[{j}] needs 'function': {{'name': ..., 'arguments': ...}}.",
                        param="messages",
                    )
                args = fn.get("arguments", "{}")
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        raise InvalidRequestError(
                            f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON; send the "
                            "arguments object as a JSON string.",
                            param="messages",
                        ) from None
                if isinstance(call.get("id"), str):
                    seen_ids.add(call["id"])
                fixed.append({**call, "type": "function", "function": {**fn, "arguments": args}})
            m["tool_calls"] = fixed
        elif m["role"] == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequestError(
                    f"messages[{i}] has role 'tool' but no 'tool_call_id'; set it to the id of the call it answers.",
                    param="messages",
                )
            if call_id not in seen_ids:
                raise InvalidRequestError(
                    f"messages[{i}].tool_call_id '{call_id}' answers no tool call of an earlier assistant "
                    "message; use the id of the call it is the result of.",
                    param="messages",
                )
        out.append(m)
    return out


# ---------------------------------------------------------------- parsers (auto)


class ToolParser:
    """Finds the tool calls a model wrote in its own format. ``starts`` are the markers that
    begin a call; ``parse`` splits a finished text into (content before the calls, calls)."""

    name = "base"
    starts: tuple[str, ...] = ()
    json_start = False  # a bare JSON object at the start of the output may be a call (Llama 3)

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        raise NotImplementedError


def _call_from(obj: Any) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))


def _json_values(text: str) -> list[Any]:
    """Consecutive JSON values in ``text`` (separated by whitespace, ';' or ','); stops at garbage."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n;,":
            pos += 1
        if pos >= len(text):
            return values
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return values
        values.append(value)


def _content(text: str) -> str | None:
    return text if text.strip() else None


class HermesParser(ToolParser):
    """Qwen2.5 / Qwen3 (and Hermes): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``."""

    name = "hermes"
    starts = ("<tool_call>",)
    _call = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        if "<tool_call>" not in text:
            return text, []
        calls = []
        for body in self._call.findall(text):
            for value in _json_values(body):
                call = _call_from(value)
                if call is not None:
                    calls.append(call)
        if not calls:
            return text, []
        return _content(text[: text.index("<tool_call>")]), calls


class MistralParser(ToolParser):
    """Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` or ``[TOOL_CALLS]name[ARGS]{...}``."""

    name = "mistral"
    starts = ("[TOOL_CALLS]",)

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        if "[TOOL_CALLS]" not in text:
            return text, []
        head, _, rest = text.partition("[TOOL_CALLS]")
        calls: list[ToolCall] = []
        if "[ARGS]" in rest:  # newer tokenizers: one call per [TOOL_CALLS]
            for part in rest.split("[TOOL_CALLS]"):
                name, _, args = part.partition("[ARGS]")
                values = _json_values(args)
                if name.strip() and values:
                    calls.append(ToolCall(name.strip(), json.dumps(values[0], ensure_ascii=False)))
        else:
            for value in _json_values(rest):
                for item in value if isinstance(value, list) else [value]:
                    call = _call_from(item)
                    if call is not None:
                        calls.append(call)
        if not calls:
            return text, []
        return _content(head), calls


class Llama3Parser(ToolParser):
    """Llama 3.1/3.2/3.3: ``{"name": ..., "parameters": {...}}`` (optionally after ``<|python_tag|>``,
    several separated by ';')."""

    name = "llama3_json"
    starts = ("<|python_tag|>",)
    json_start = True

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        head, tag, rest = text.partition("<|python_tag|>")
        body = rest if tag else text
        stripped = body.lstrip()
        if not stripped.startswith("{"):
            return text, []
        calls = []
        for value in _json_values(stripped):
            call = _call_from(value)
            if call is None:
                return text, []
            calls.append(call)
        if not calls:
            return text, []
        return (_content(head) if tag else None), calls


PARSERS: dict[str, type[ToolParser]] = {p.name: p for p in (HermesParser, MistralParser, Llama3Parser)}
FAMILY_PARSERS = {
    "qwen2": "hermes",
    "qwen3": "hermes",
    "mistral": "mistral",
    "mixtral": "mistral",
    "llama": "llama3_json",
}


def parser_for(chat_template: str | None, model_type: str | None) -> ToolParser:
    """The model's own tool-call format: from what its chat template writes, else from its family."""
    template = chat_template or ""
    if "<tool_call>" in template:
        return HermesParser()
    if "[TOOL_CALLS]" in template:
        return MistralParser()
    if "<|python_tag|>" in template or "ipython" in template:
        return Llama3Parser()
    return PARSERS[FAMILY_PARSERS.get(model_type or "", "hermes")]()


# ---------------------------------------------------------------- streaming


class ForcedCallsScanner:
    """Reads ``required``'s constrained output as it streams, ``[{"name": "f", "arguments": {...}}, ...]``,
    into tool-call deltas: a call's header once its name is complete, then its argument fragments.

    The grammar fixes the layout (no free whitespace, ``", "`` and ``": "`` separators, ``name``
    before ``arguments``), so a few states suffice.
    """

    FIRST = '[{"name": "'
    NEXT = ', {"name": "'
    ARGS = ', "arguments": '

    def __init__(self, new_id: Any = new_call_id) -> None:
        self.new_id = new_id
        self.text = ""
        self.pos = 0
        self.state = "head"
        self.calls: list[ToolCall] = []  # complete calls
        self._call: ToolCall | None = None
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def _expect(self, literal: str) -> bool | None:
        """True: consumed; None: wait for more text; False: something else is there."""
        rest = self.text[self.pos : self.pos + len(literal)]
        if rest == literal:
            self.pos += len(literal)
            return True
        return None if literal.startswith(rest) else False

    def feed(self, delta: str) -> list[dict[str, Any]]:
        self.text += delta
        out: list[dict[str, Any]] = []
        while True:
            if self.state == "head":
                got = self._expect(self.FIRST if not self.calls else self.NEXT)
                if not got:
                    if got is False:
                        self.state = "done"
                    return out
                self.state = "name"
            elif self.state == "name":
                end = self.text.find('"', self.pos)
                if end < 0:
                    return out
                self._call = ToolCall(self.text[self.pos : end], "", self.new_id())
                self.pos = end + 1
                self.state = "args_key"
            elif self.state == "args_key":
                got = self._expect(self.ARGS)
                if not got:
                    if got is False:
                        self.state = "done"
                    return out
                assert self._call is not None
                index = len(self.calls)
                out.append(
                    {
                        "index": index,
                        **{**self._call.as_openai(), "function": {"name": self._call.name, "arguments": ""}},
                    }
                )
                self.state, self._depth = "args", 0
            elif self.state == "args":
                assert self._call is not None
                start, end = self.pos, self._scan_value()
                if end > start:
                    fragment = self.text[start:end]
                    self._call.arguments += fragment
                    out.append({"index": len(self.calls), "function": {"arguments": fragment}})
                if self.state == "args":
                    return out
            elif self.state == "close":
                got = self._expect("}")
                if not got:
                    if got is False:
                        self.state = "done"
                    return out
                assert self._call is not None
                self.calls.append(self._call)
                self._call = None
                self.state = "head"
            else:
                return out

    def _scan_value(self) -> int:
        """Advance through the arguments value; at its end switch to ``close``. Returns the new position."""
        i = self.pos
        while i < len(self.text):
            ch = self.text[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                if self._depth == 0:  # a scalar's end: the call object closes here
                    self.state = "close"
                    break
                self._depth -= 1
            elif ch == "," and self._depth == 0:
                self.state = "close"
                break
            i += 1
            if self._depth == 0 and not self._in_string and self.text[i - 1] in '}]"':
                self.state = "close"
                break
        self.pos = i
        return i


class ToolCallStream:
    """Streamed text of one choice -> content deltas and OpenAI tool-call deltas.

    ``auto``: content flows until a call marker of the model's format shows up (a possible
    marker's first characters are held back, as stop strings are); from there the text is
    held and parsed when the choice ends. ``named``: every fragment is an argument fragment of
    the one call. ``required``: ``ForcedCallsScanner`` turns the constrained JSON into call
    headers and argument fragments as it streams.
    """

    def __init__(self, tools: ToolRequest, parser: ToolParser) -> None:
        self.tools = tools
        self.parser = parser
        self.text = ""
        self._sent = 0  # chars of ``text`` sent as content
        self._holding = False
        self.calls: list[ToolCall] = []
        self._named: ToolCall | None = None
        self._forced = ForcedCallsScanner(tools.new_id) if tools.mode == "required" else None

    def feed(self, delta: str) -> tuple[str, list[dict[str, Any]]]:
        """(content to send now, tool-call deltas to send now)."""
        self.text += delta
        if self.tools.mode == "named":
            assert self.tools.name is not None
            out = []
            if self._named is None:
                self._named = ToolCall(self.tools.name, "", self.tools.new_id())
                out.append({"index": 0, **self._named.as_openai()})
            if delta:
                out.append({"index": 0, "function": {"arguments": delta}})
            return "", out
        if self._forced is not None:
            return "", self._forced.feed(delta)
        if self._holding:
            return "", []
        if self.parser.json_start and self._sent == 0 and self.text.lstrip().startswith("{"):
            self._holding = True  # Llama 3 writes a call as a bare JSON object
            return "", []
        for marker in self.parser.starts:
            at = self.text.find(marker, self._sent)
            if at >= 0:
                self._holding = True
                content, self._sent = self.text[self._sent : at], at
                return content, []
        keep = max((_partial_suffix(self.text, m) for m in self.parser.starts), default=0)
        if self.parser.json_start and self._sent == 0 and not self.text.strip():
            keep = len(self.text)  # only whitespace so far: it may still open a JSON call
        end = len(self.text) - keep
        content, self._sent = self.text[self._sent : end], max(self._sent, end)
        return content, []

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end of the choice: (content still held, tool-call deltas)."""
        if self.tools.mode == "named":
            if self._named is None:  # no token at all
                return "", []
            self._named.arguments = self.text
            self.calls = [self._named]
            return "", []
        if self._forced is not None:
            self.calls = self._forced.calls
            return "", []
        else:
            held = self.text[self._sent :]
            _, calls = self.parser.parse(held)
            self.calls = self.tools.with_ids(calls)
            if not self.calls:
                self._sent = len(self.text)
                return held, []
        deltas = []
        for i, call in enumerate(self.calls):
            deltas.append(
                {"index": i, **{**call.as_openai(), "function": {"name": call.name, "arguments": ""}}}
            )
            deltas.append({"index": i, "function": {"arguments": call.arguments}})
        return "", deltas


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
