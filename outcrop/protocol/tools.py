"""Tool use and structured output in OpenAI chat bodies: checked at the gateway, passed to the copy.

The copy contract is vLLM's OpenAI server (docs/tools.md): a chat body may carry ``tools``,
``tool_choice`` (``none`` / ``auto`` / ``required`` / a named function), ``parallel_tool_calls``,
``response_format`` (``json_object`` / ``json_schema``) and vLLM's ``guided_json`` /
``guided_regex`` / ``guided_choice`` / ``guided_grammar`` / ``structured_outputs`` extras. The
gateway checks what it can without the model (shapes, names, JSON Schema validity, sizes, tool
messages answering calls that were made) so a malformed request is a 400 in the caller's dialect
naming the parameter, whichever copy would have served it; what only the model knows (whether its
chat template takes tools at all) is the copy's answer.

Every surface builds its chat body and then calls :func:`check_chat_tools`: the OpenAI chat route,
InvokeModel ``messages`` bodies, Converse (after translating ``toolConfig``), the Responses API and
batch records.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs

from outcrop.errors import InvalidRequestError

# Why 64 KiB: a generous tool schema is a few KiB; a schema past this size costs the copy's grammar
# compiler seconds and is almost always a mistake (a whole OpenAPI document pasted in).
MAX_SCHEMA_BYTES = 64 * 1024
# OpenAI's own limit on functions per request; agent frameworks stay well below it.
MAX_TOOLS = 128
# OpenAI's (and Bedrock's ToolName) rule for function names.
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_CHOICES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
# vLLM's structured-output extras on a chat or completion body (passed to the copy as given).
GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")
# Chat body members that ask for tools or a constrained answer, passed through to the copy.
CHAT_TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format", *GUIDED_FIELDS)
# Members of a prompt-style (completion) body that constrain its text, passed through to the copy.
COMPLETION_STRUCTURE_FIELDS = ("response_format", *GUIDED_FIELDS)


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, default=str)[:80]
    except ValueError:
        return "(a number too long to show)"


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    """``schema`` if it is a JSON Schema object of at most MAX_SCHEMA_BYTES; else a 400 naming ``param``."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            f"{param} is {_shown(schema)}; it must be a JSON Schema object, e.g. "
            '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}.',
            param=param,
        )
    size = len(json.dumps(schema, separators=(",", ":")))
    if size > MAX_SCHEMA_BYTES:
        raise InvalidRequestError(
            f"{param} is {size} bytes of JSON Schema; the limit is {MAX_SCHEMA_BYTES} bytes. Send a smaller "
            "schema (describe only the fields the model must fill).",
            param=param,
        )
    dialect = schema.get("$schema")
    if dialect is not None and not isinstance(dialect, str):
        raise InvalidRequestError(
            f"{param}.$schema is {_shown(dialect)}; it must be a meta-schema URI string (or left out).",
            param=param,
        )
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.instance_path)
        raise InvalidRequestError(
            f"{param}{where} is not valid JSON Schema: {exc.message[:200]}. Fix that part of the schema.",
            param=param,
        ) from None
    except jsonschema_rs.ReferencingError:
        raise InvalidRequestError(
            f"{param}.$schema is {_shown(dialect)}, a meta-schema this server does not know; use "
            '"https://json-schema.org/draft/2020-12/schema" (or another published draft) or leave it out.',
            param=param,
        ) from None
    return schema


def check_name(name: Any, param: str) -> str:
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidRequestError(
            f"{param} is {_shown(name)}; a function name is 1 to 64 letters, digits, '_' or '-'.",
            param=param,
        )
    return name


def check_tools(tools: Any) -> list[str]:
    """The function names of OpenAI chat ``tools``; a 400 naming the first faulty member."""
    if not isinstance(tools, list):
        raise InvalidRequestError(
            'tools must be a list like [{"type": "function", "function": {"name": "get_weather", '
            '"parameters": {"type": "object", "properties": {}}}}].',
            param="tools",
        )
    if len(tools) > MAX_TOOLS:
        raise InvalidRequestError(
            f"tools has {len(tools)} entries; at most {MAX_TOOLS} are allowed.", param="tools"
        )
    names: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise InvalidRequestError(
                f"{where}.type is {_shown(kind)}; only function tools are served: "
                '{"type": "function", "function": {"name": ..., "parameters": {...}}}.',
                param=f"{where}.type",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise InvalidRequestError(
                f'{where}.function is missing or not an object; send {{"name": ..., "description": ..., '
                '"parameters": {...}}.',
                param=f"{where}.function",
            )
        name = check_name(function.get("name"), f"{where}.function.name")
        if name in names:
            raise InvalidRequestError(
                f"{where}.function.name '{name}' is used by another tool too; tool names must be unique.",
                param=f"{where}.function.name",
            )
        names.append(name)
        if function.get("parameters") is not None:
            check_schema(function["parameters"], f"{where}.function.parameters")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequestError(
                f"{where}.function.description must be a string.", param=f"{where}.function.description"
            )
    return names


def check_tool_choice(choice: Any, names: list[str] | None) -> None:
    """A 400 unless ``choice`` is none / auto / required / a named function among ``names``."""
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise InvalidRequestError(
                f"tool_choice is {_shown(choice)}; use 'none', 'auto', 'required' or "
                '{"type": "function", "function": {"name": "..."}}.',
                param="tool_choice",
            )
        if choice == "required" and not names:
            raise InvalidRequestError(
                "tool_choice is 'required' but the request has no tools; add 'tools' or leave tool_choice out.",
                param="tool_choice",
            )
        return
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if (
        not isinstance(choice, dict)
        or choice.get("type", "function") != "function"
        or not isinstance(name, str)
    ):
        raise InvalidRequestError(
            f"tool_choice is {_shown(choice)}; use 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": "..."}}.',
            param="tool_choice",
        )
    if name not in (names or []):
        known = ", ".join(names or []) or "none: the request has no tools"
        raise InvalidRequestError(
            f"tool_choice names the function '{name}', which is not in tools (tools: {known}). Name one of "
            "the request's tools.",
            param="tool_choice.function.name",
        )


def check_response_format(response_format: Any) -> None:
    """A 400 unless ``response_format`` is text, json_object or json_schema with a valid schema."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in RESPONSE_FORMATS:
        raise InvalidRequestError(
            f'response_format is {_shown(response_format)}; use {{"type": "text"}}, '
            '{"type": "json_object"} or {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}.',
            param="response_format",
        )
    if kind != "json_schema":
        return
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            'response_format.json_schema must be an object like {"name": "answer", "schema": {...}, '
            '"strict": true}.',
            param="response_format.json_schema",
        )
    check_name(spec.get("name"), "response_format.json_schema.name")
    if spec.get("schema") is not None:
        check_schema(spec["schema"], "response_format.json_schema.schema")


def _check_guided(body: dict[str, Any]) -> None:
    guided_json = body.get("guided_json")
    if guided_json is not None:
        if isinstance(guided_json, str):
            try:
                guided_json = json.loads(guided_json)
            except ValueError:
                raise InvalidRequestError(
                    "guided_json is a string that is not JSON; send the JSON Schema as an object.",
                    param="guided_json",
                ) from None
        check_schema(guided_json, "guided_json")
    for key in ("guided_regex", "guided_grammar"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidRequestError(f"{key} is {_shown(value)}; it must be a non-empty string.", param=key)
    choice = body.get("guided_choice")
    if choice is not None and (
        not isinstance(choice, list) or not choice or not all(isinstance(c, str) for c in choice)
    ):
        raise InvalidRequestError(
            f'guided_choice is {_shown(choice)}; it must be a non-empty list of strings, like ["yes", "no"].',
            param="guided_choice",
        )
    outputs = body.get("structured_outputs")
    if outputs is not None:
        if not isinstance(outputs, dict):
            raise InvalidRequestError(
                'structured_outputs must be an object like {"json": {...}} or {"choice": ["yes", "no"]}.',
                param="structured_outputs",
            )
        if isinstance(outputs.get("json"), dict):
            check_schema(outputs["json"], "structured_outputs.json")


def check_structure(body: dict[str, Any]) -> None:
    """The checks of ``response_format`` and vLLM's guided extras (chat and completion bodies alike)."""
    if body.get("response_format") is not None:
        check_response_format(body["response_format"])
    _check_guided(body)


def _check_tool_calls(calls: Any, where: str) -> list[str]:
    if not isinstance(calls, list):
        raise InvalidRequestError(f"{where} must be a list of tool calls.", param=where)
    ids: list[str] = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function, dict)
        ):
            raise InvalidRequestError(
                f'{at} must be {{"id": "call_1", "type": "function", "function": {{"name": ..., '
                '"arguments": "<JSON string>"}}.',
                param=at,
            )
        check_name(function.get("name"), f"{at}.function.name")
        if not isinstance(function.get("arguments"), str):
            raise InvalidRequestError(
                f"{at}.function.arguments is {_shown(function.get('arguments'))}; it must be a string of "
                'JSON, e.g. "{\\"city\\": \\"Paris\\"}".',
                param=f"{at}.function.arguments",
            )
        ids.append(call["id"])
    return ids


def check_tool_messages(messages: list[dict[str, Any]]) -> None:
    """A 400 when a ``tool`` message answers no call an earlier assistant turn made (or calls are malformed)."""
    called: set[str] = set()
    for i, message in enumerate(messages):
        if message.get("role") == "assistant" and message.get("tool_calls") is not None:
            called.update(_check_tool_calls(message["tool_calls"], f"messages[{i}].tool_calls"))
        elif message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequestError(
                    f"messages[{i}] is a 'tool' message without 'tool_call_id'; give the id of the assistant's "
                    "tool call it answers.",
                    param=f"messages[{i}].tool_call_id",
                )
            if call_id not in called:
                raise InvalidRequestError(
                    f"messages[{i}].tool_call_id is '{call_id}', but no earlier assistant message made a tool "
                    "call with that id. A tool message must follow the assistant message whose tool_calls "
                    "it answers.",
                    param=f"messages[{i}].tool_call_id",
                )


def check_chat_tools(body: dict[str, Any]) -> None:
    """Every gateway check of a chat body's tools, tool messages and structured output (module docstring)."""
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise InvalidRequestError(
                f"'{legacy}' is OpenAI's deprecated function-calling API; send 'tools' and 'tool_choice' "
                "instead.",
                param=legacy,
            )
    names = check_tools(body["tools"]) if body.get("tools") is not None else None
    if body.get("tool_choice") is not None:
        check_tool_choice(body["tool_choice"], names)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequestError(
            f"parallel_tool_calls is {_shown(parallel)}; it must be true or false.",
            param="parallel_tool_calls",
        )
    check_structure(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        check_tool_messages(messages)


def kinds(body: dict[str, Any]) -> list[str]:
    """What a body asks for, for the metrics: ``tools``, ``json_schema``, ``json_object``, ``guided``."""
    out = []
    if body.get("tools"):
        out.append("tools")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
        out.append(str(response_format["type"]))
    if any(body.get(key) is not None for key in GUIDED_FIELDS):
        out.append("guided")
    return out
