"""Converse tool use <-> the copy's OpenAI chat: ``toolConfig``, ``toolUse`` / ``toolResult`` blocks, answers, streams.

Shapes are botocore's bedrock-runtime service model (2023-09-30): ``ToolConfiguration``,
``ToolSpecification`` (``inputSchema.json`` is a JSON document), ``ToolChoice`` (``auto`` /
``any`` / ``tool``), ``ToolUseBlock`` (``input`` is a JSON document, not a string),
``ToolResultBlock`` (``content`` of ``text`` / ``json`` blocks, ``status`` success/error), and the
ConverseStream events ``contentBlockStart`` (``start.toolUse`` {toolUseId, name}),
``contentBlockDelta`` (``delta.toolUse.input``: a fragment of the input's JSON text) and
``contentBlockStop``. Read by outcrop/protocol/bedrock_runtime.py; pure, unit-tested in
tests/api/test_converse_tools.py.

Mapping (docs/tools.md): ``any`` -> ``required``, ``tool`` -> a named function; an assistant turn's
toolUse blocks -> its ``tool_calls``; a user turn's toolResult blocks -> ``tool`` messages (before
the turn's text, as OpenAI requires them right after the calls they answer).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from outcrop.errors import InvalidRequestError
from outcrop.protocol import tools

# Bedrock's own words when messages hold tool blocks but the request has no toolConfig.
TOOL_CONFIG_REQUIRED = (
    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
)
# ToolUseId's pattern in the service model.
TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, default=str)[:80]
    except ValueError:
        return "(a number too long to show)"


def _invalid(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"1 validation error detected: {message}", param=param)


def new_tool_use_id() -> str:
    return f"tooluse_{uuid.uuid4().hex[:22]}"


# -- the request ------------------------------------------------------------------------


def tool_config_to_chat(config: Any) -> dict[str, Any]:
    """``toolConfig`` as the chat body's ``tools`` and ``tool_choice``; a ValidationException naming the fault."""
    if not isinstance(config, dict) or not isinstance(config.get("tools"), list) or not config["tools"]:
        raise _invalid(
            'toolConfig must hold a non-empty \'tools\' list of {"toolSpec": {"name", "description", '
            '"inputSchema": {"json": {...}}}}.',
            "toolConfig.tools",
        )
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(config["tools"]):
        where = f"toolConfig.tools.{i}"
        if isinstance(tool, dict) and set(tool) == {"cachePoint"}:
            continue  # a prompt-caching hint: nothing to translate
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if not isinstance(spec, dict):
            kind = next(iter(tool), "?") if isinstance(tool, dict) and tool else _shown(tool)
            raise _invalid(
                f"{where} is a '{kind}' tool; imported models take toolSpec tools only "
                '({"toolSpec": {"name", "description", "inputSchema": {"json": {...}}}}).',
                where,
            )
        name = spec.get("name")
        if not isinstance(name, str) or not tools.TOOL_NAME.match(name):
            raise _invalid(
                f"Value {_shown(name)} at '{where}.toolSpec.name' failed to satisfy constraint: Member must "
                "satisfy regular expression pattern: [a-zA-Z0-9_-]+ (1 to 64 characters).",
                f"{where}.toolSpec.name",
            )
        schema = spec.get("inputSchema")
        if not isinstance(schema, dict) or "json" not in schema:
            raise _invalid(
                f'{where}.toolSpec.inputSchema must be {{"json": <a JSON Schema object>}}.',
                f"{where}.toolSpec.inputSchema",
            )
        try:
            tools.check_schema(schema["json"], f"{where}.toolSpec.inputSchema.json")
        except InvalidRequestError as exc:
            raise _invalid(exc.message, f"{where}.toolSpec.inputSchema.json") from None
        function: dict[str, Any] = {"name": name, "parameters": schema["json"]}
        if isinstance(spec.get("description"), str):
            function["description"] = spec["description"]
        if spec.get("strict") is not None:
            function["strict"] = bool(spec["strict"])
        out.append({"type": "function", "function": function})
    if not out:
        raise _invalid(
            "toolConfig.tools holds no toolSpec (cachePoint entries are hints, not tools); add a toolSpec.",
            "toolConfig.tools",
        )
    names = [t["function"]["name"] for t in out]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise _invalid(
            f"The tool name '{duplicate}' is used by more than one tool; names must be unique.",
            "toolConfig.tools",
        )
    body: dict[str, Any] = {"tools": out}
    choice = config.get("toolChoice")
    if choice is not None:
        body["tool_choice"] = _tool_choice(choice, names)
    return body


def _tool_choice(choice: Any, names: list[str]) -> Any:
    if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
        raise _invalid(
            f"toolConfig.toolChoice is {_shown(choice)}; it must hold exactly one of "
            '{"auto": {}}, {"any": {}} or {"tool": {"name": "..."}}.',
            "toolConfig.toolChoice",
        )
    if "auto" in choice:
        return "auto"
    if "any" in choice:
        return "required"
    name = choice["tool"].get("name") if isinstance(choice["tool"], dict) else None
    if name not in names:
        raise _invalid(
            f"toolConfig.toolChoice.tool.name is {_shown(name)}, which is not a tool of toolConfig.tools "
            f"({', '.join(names)}). Name one of the request's tools.",
            "toolConfig.toolChoice.tool.name",
        )
    return {"type": "function", "function": {"name": name}}


def output_config_to_chat(config: Any) -> dict[str, Any]:
    """``outputConfig.textFormat`` (a JSON Schema as a string) as the chat body's ``response_format``."""
    if config is None:
        return {}
    fmt = config.get("textFormat") if isinstance(config, dict) else None
    if fmt is None:
        return {}
    where = "outputConfig.textFormat"
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _invalid(f"{where}.type must be 'json_schema'.", f"{where}.type")
    spec = (fmt.get("structure") or {}).get("jsonSchema") if isinstance(fmt.get("structure"), dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), str):
        raise _invalid(
            f'{where}.structure.jsonSchema must be {{"schema": "<a JSON Schema as a string>", "name": "..."}}.',
            f"{where}.structure.jsonSchema",
        )
    try:
        schema = json.loads(spec["schema"])
        tools.check_schema(schema, f"{where}.structure.jsonSchema.schema")
    except ValueError:
        raise _invalid(
            f"{where}.structure.jsonSchema.schema is not JSON; send the JSON Schema as a JSON string.",
            f"{where}.structure.jsonSchema.schema",
        ) from None
    except InvalidRequestError as exc:
        raise _invalid(exc.message, f"{where}.structure.jsonSchema.schema") from None
    name = (
        spec.get("name")
        if isinstance(spec.get("name"), str) and tools.TOOL_NAME.match(spec["name"])
        else "output"
    )
    json_schema: dict[str, Any] = {"name": name, "schema": schema, "strict": True}
    if isinstance(spec.get("description"), str):
        json_schema["description"] = spec["description"]
    return {"response_format": {"type": "json_schema", "json_schema": json_schema}}


@dataclass
class Turn:
    """One Converse message's content: its text, and its toolUse / toolResult blocks as read."""

    role: str
    text: str = ""
    tool_uses: list[dict[str, Any]] = field(default_factory=list)  # {toolUseId, name, input}
    tool_results: list[dict[str, Any]] = field(default_factory=list)  # {toolUseId, content: str}

    def to_chat(self) -> list[dict[str, Any]]:
        if self.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
            if self.tool_uses:
                message["tool_calls"] = [
                    {
                        "id": use["toolUseId"],
                        "type": "function",
                        "function": {"name": use["name"], "arguments": json.dumps(use["input"])},
                    }
                    for use in self.tool_uses
                ]
            elif message["content"] is None:
                message["content"] = ""
            return [message]
        out: list[dict[str, Any]] = [
            {"role": "tool", "tool_call_id": r["toolUseId"], "content": r["content"]}
            for r in self.tool_results
        ]
        if self.text or not self.tool_results:
            out.append({"role": "user", "content": self.text})
        return out


def _tool_result_text(blocks: Any, where: str) -> str:
    if not isinstance(blocks, list):
        raise _invalid(f'{where} must be a list of {{"text": ...}} or {{"json": ...}} blocks.', where)
    parts = []
    for j, block in enumerate(blocks):
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif isinstance(block, dict) and "json" in block:
            parts.append(json.dumps(block["json"]))
        else:
            kind = next(iter(block), "?") if isinstance(block, dict) and block else _shown(block)
            raise _invalid(
                f"{where}.{j} is a '{kind}' block; tool results for imported models take text and json blocks.",
                f"{where}.{j}",
            )
    return "\n".join(parts)


def read_turn(role: str, blocks: Any, where: str) -> Turn:
    """A message's content blocks as a :class:`Turn` (text, toolUse, toolResult; cachePoint hints skipped)."""
    if not isinstance(blocks, list):
        raise InvalidRequestError(
            f'\'{where}\' must be a list of content blocks like {{"text": "..."}}.', param=where
        )
    turn = Turn(role=role)
    texts = []
    for j, block in enumerate(blocks):
        at = f"{where}.{j}"
        kind = next(iter(block), "?") if isinstance(block, dict) and block else type(block).__name__
        if isinstance(block, dict) and "text" in block:
            if not isinstance(block["text"], str):
                raise InvalidRequestError(
                    f"'{where}' has a text block whose 'text' is {_shown(block['text'])}; it must be a string.",
                    param=where,
                )
            texts.append(block["text"])
        elif kind == "cachePoint":
            continue
        elif kind == "toolUse" and isinstance(block["toolUse"], dict):
            if role != "assistant":
                raise _invalid(
                    f"{at} is a toolUse block in a user message; toolUse blocks belong to assistant turns.",
                    at,
                )
            use = block["toolUse"]
            _check_tool_use_id(use.get("toolUseId"), f"{at}.toolUse.toolUseId")
            if not isinstance(use.get("name"), str) or not tools.TOOL_NAME.match(use["name"]):
                raise _invalid(
                    f"{at}.toolUse.name is {_shown(use.get('name'))}; it must be a tool's name.",
                    f"{at}.toolUse.name",
                )
            if "input" not in use:
                raise _invalid(
                    f"{at}.toolUse needs 'input', the JSON document the tool was called with.",
                    f"{at}.toolUse.input",
                )
            turn.tool_uses.append({"toolUseId": use["toolUseId"], "name": use["name"], "input": use["input"]})
        elif kind == "toolResult" and isinstance(block["toolResult"], dict):
            if role != "user":
                raise _invalid(
                    f"{at} is a toolResult block in an assistant message; toolResult blocks belong to user turns.",
                    at,
                )
            result = block["toolResult"]
            _check_tool_use_id(result.get("toolUseId"), f"{at}.toolResult.toolUseId")
            content = _tool_result_text(result.get("content"), f"{at}.toolResult.content")
            if result.get("status") not in (None, "success", "error"):
                raise _invalid(
                    f"{at}.toolResult.status is {_shown(result.get('status'))}; it must be 'success' or 'error'.",
                    f"{at}.toolResult.status",
                )
            if result.get("status") == "error":
                content = f"Error: {content}"
            turn.tool_results.append({"toolUseId": result["toolUseId"], "content": content})
        else:
            raise InvalidRequestError(
                f"'{where}' has a '{kind}' content block; imported models take text, toolUse and toolResult "
                'blocks only ({"text": "..."}).',
                param=where,
            )
    turn.text = "".join(texts)
    return turn


def _check_tool_use_id(value: Any, where: str) -> None:
    if not isinstance(value, str) or not TOOL_USE_ID.match(value):
        raise _invalid(
            f"Value {_shown(value)} at '{where}' failed to satisfy constraint: Member must satisfy regular "
            "expression pattern: [a-zA-Z0-9_.:-]+ (1 to 64 characters).",
            where,
        )


def check_tool_turns(turns: list[Turn], has_tool_config: bool) -> None:
    """Bedrock's rules: tool blocks need a toolConfig; a toolResult answers a toolUse of the turn before it."""
    if not has_tool_config and any(t.tool_uses or t.tool_results for t in turns):
        raise InvalidRequestError(TOOL_CONFIG_REQUIRED, param="toolConfig")
    for i, turn in enumerate(turns):
        if not turn.tool_results:
            continue
        asked = {u["toolUseId"] for u in turns[i - 1].tool_uses} if i > 0 else set()
        for result in turn.tool_results:
            if result["toolUseId"] not in asked:
                raise InvalidRequestError(
                    f"messages.{i}.content has a toolResult for toolUseId '{result['toolUseId']}', but the "
                    "assistant turn before it has no toolUse with that id "
                    f"({', '.join(sorted(asked)) or 'it has no toolUse blocks'}). Each toolResult must answer "
                    "a toolUse of the previous assistant message.",
                    param=f"messages.{i}.content",
                )


# -- the answer -------------------------------------------------------------------------


def answer_content(message: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """A chat answer's message as Converse content blocks, and whether a tool call's arguments were not JSON."""
    blocks: list[dict[str, Any]] = []
    if message.get("content"):
        blocks.append({"text": message["content"]})
    malformed = False
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            value = json.loads(function.get("arguments") or "{}")
        except ValueError:
            malformed = True
            continue
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": call.get("id") or new_tool_use_id(),
                    "name": function.get("name", ""),
                    "input": value,
                }
            }
        )
    if not blocks:
        blocks.append({"text": ""})
    return blocks, malformed


def stop_reason(
    finish_reason: str | None, stop_reason: Any, called_tools: bool, malformed: bool = False
) -> str:
    """Converse's stopReason (see also bedrock_runtime.converse_stop_reason for vLLM's ``stop_reason``)."""
    if malformed:
        return "malformed_tool_use"
    if called_tools and finish_reason != "length":
        return "tool_use"
    if (finish_reason or "stop") == "stop" and isinstance(stop_reason, str):
        return "stop_sequence"
    return _STOP.get(finish_reason or "stop", "end_turn")


class ConverseStreamTranslator:
    """Chat-completion chunks -> ConverseStream content events, one call of :meth:`feed` per choice.

    Text is a block without a ``contentBlockStart`` (as Bedrock streams it); each tool call is a
    block opened by ``contentBlockStart`` {toolUse: {toolUseId, name}}, fed ``toolUse.input``
    fragments, and closed by ``contentBlockStop`` when the next block begins or the answer ends.
    """

    def __init__(self) -> None:
        self.open: int | None = None  # the content block index now open
        self.open_is_text = False
        self.next_index = 0
        self.tool_blocks: dict[int, int] = {}  # the chat tool call's index -> its block index
        self.texts: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}  # block index -> {toolUseId, name, input (text)}
        self.finish: str | None = None
        self.stopped_by: Any = None

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        return [("contentBlockStop", {"contentBlockIndex": index})]

    def feed(self, choice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            if self.open is None or not self.open_is_text:
                events += self._close()
                self.open, self.open_is_text = self.next_index, True
                self.next_index += 1
            self.texts.append(text)
            events.append(("contentBlockDelta", {"delta": {"text": text}, "contentBlockIndex": self.open}))
        for call in delta.get("tool_calls") or []:
            position = int(call.get("index", 0))
            function = call.get("function") or {}
            if position not in self.tool_blocks:
                events += self._close()
                index = self.tool_blocks[position] = self.next_index
                self.next_index += 1
                self.open, self.open_is_text = index, False
                use = {"toolUseId": call.get("id") or new_tool_use_id(), "name": function.get("name") or ""}
                self.calls[index] = {**use, "input": ""}
                events.append(("contentBlockStart", {"start": {"toolUse": use}, "contentBlockIndex": index}))
            index = self.tool_blocks[position]
            fragment = function.get("arguments")
            if fragment:
                self.calls[index]["input"] += fragment
                events.append(
                    (
                        "contentBlockDelta",
                        {"delta": {"toolUse": {"input": fragment}}, "contentBlockIndex": index},
                    )
                )
        self.finish = choice.get("finish_reason") or self.finish
        self.stopped_by = choice.get("stop_reason", self.stopped_by)
        return events

    def end(self) -> tuple[list[tuple[str, dict[str, Any]]], str]:
        """The closing content events and the stopReason."""
        if self.next_index == 0:  # nothing was said: one empty text block, closed
            events: list[tuple[str, dict[str, Any]]] = [("contentBlockStop", {"contentBlockIndex": 0})]
        else:
            events = self._close()
        return events, stop_reason(self.finish, self.stopped_by, bool(self.calls))

    def message(self) -> dict[str, Any]:
        """The whole answer as a Converse message (for the invocation log)."""
        content: list[dict[str, Any]] = (
            [{"text": "".join(self.texts)}] if self.texts or not self.calls else []
        )
        for call in self.calls.values():
            try:
                value = json.loads(call["input"] or "{}")
            except ValueError:
                value = call["input"]
            content.append(
                {"toolUse": {"toolUseId": call["toolUseId"], "name": call["name"], "input": value}}
            )
        return {"role": "assistant", "content": content}
