"""Request JSON, parsed with bounds: every surface reads its body through :func:`loads`.

Python's ``json`` accepts inputs that later break the server in ways a caller cannot read:
arrays nested 100,000 deep end in ``RecursionError``, a 5,000-digit integer in ``ValueError``
(CPython's int-string limit), ``1e999`` becomes ``inf``, ``NaN`` is not JSON at all, and an
escaped lone surrogate (``"\\ud800"``) becomes a string that cannot be encoded as UTF-8 when it
is sent on to a model copy. :func:`loads` turns each of these into an
:class:`~outcrop.errors.InvalidRequestError` (a 400 ``ValidationException`` / OpenAI
``invalid_request_error``) that names the field and the limit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from outcrop.errors import InvalidRequestError

# Why 64: the deepest legitimate body (a Converse request with a tool schema) nests about a
# dozen levels; 64 leaves room for generous JSON-schema documents and stays far below
# Python's recursion limit (1,000), which a deeper parse or json.dumps would hit.
MAX_DEPTH = 64
# Why 64: the largest number any API takes is a 64-bit seed (20 digits); 64 characters also
# admit any float with a long mantissa and exponent, and keep int() conversions cheap.
MAX_NUMBER_CHARS = 64

# A surrogate code point left in a decoded string: the JSON decoder joins valid pairs
# (\ud83d\ude00) into one character, so anything left in this range is unpaired.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _too_deep(where: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The {where} nests arrays and objects more than {MAX_DEPTH} levels deep; the limit is "
        f"{MAX_DEPTH}. Flatten the structure.",
        param="body",
    )


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_CHARS:
        raise InvalidRequestError(
            f"The request body has an integer of {len(text.lstrip('-')):,} digits ({text[:20]}...); the "
            f"limit is {MAX_NUMBER_CHARS} digits. Send a smaller number.",
            param="body",
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise InvalidRequestError(
            f"The request body has a number written with {len(text):,} characters ({text[:20]}...); the "
            f"limit is {MAX_NUMBER_CHARS}. Send a shorter number.",
            param="body",
        )
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequestError(
            f"The request body has the number {text}, which is too large to represent; send a finite number.",
            param="body",
        )
    return value


def _reject_constant(name: str) -> Any:
    raise InvalidRequestError(
        f"The request body has {name}, which is not JSON; send a finite number or null.", param="body"
    )


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def check_tree(data: Any, *, where: str = "request body") -> None:
    """Raise InvalidRequestError if ``data`` nests deeper than MAX_DEPTH or holds a lone surrogate.

    Iterative (an explicit stack), so it never recurses however deep ``data`` is.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node, path or where)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise _too_deep(where)
        if isinstance(node, dict):
            for key, value in node.items():
                child = _path(path, key)
                _check_text(key, child)
                stack.append((value, child, depth + 1))
        else:
            stack.extend((value, _path(path, i), depth + 1) for i, value in enumerate(node))


def _check_text(text: str, field: str) -> None:
    found = _SURROGATE.search(text)
    if found is not None:
        raise InvalidRequestError(
            f"'{field}' holds an unpaired UTF-16 surrogate (\\u{ord(found.group()):04x}) at character "
            f"{found.start()}; it is not valid Unicode. Send the character as a valid surrogate pair or "
            "as UTF-8.",
            param=field,
        )


def loads(raw: bytes | str, *, where: str = "request body") -> Any:
    """Parse request JSON within the bounds above, or raise InvalidRequestError saying what is wrong."""
    try:
        data = json.loads(
            raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant
        )
    except RecursionError:
        raise _too_deep(where) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"The {where} is not valid JSON: {exc}. Send a JSON object.", param="body"
        ) from None
    check_tree(data, where=where)
    return data
