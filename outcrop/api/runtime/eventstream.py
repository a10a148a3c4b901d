"""AWS event-stream framing (``application/vnd.amazon.eventstream``), as botocore's parser reads it.

A message is::

    [total length: u32][headers length: u32][prelude CRC32: u32][headers][payload][message CRC32: u32]

Each header is ``[name length: u8][name][type: u8 = 7 (string)][value length: u16][value]``.

An error after streaming began is an exception frame whose ``:exception-type`` is the *member
name* of the operation's event-stream shape (``modelStreamErrorException``, not the shape name
``ModelStreamErrorException``): botocore looks the member up by that name, and with any other
name raises an ``EventStreamError`` with an empty code and message.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING_HEADER = 7

# The error members of each operation's event-stream shape in botocore's bedrock-runtime
# 2023-09-30 service model (ResponseStream, ConverseStreamOutput); a test checks them against it.
_COMMON_ERROR_MEMBERS = frozenset(
    {
        "internalServerException",
        "modelStreamErrorException",
        "validationException",
        "throttlingException",
        "serviceUnavailableException",
    }
)
STREAM_ERROR_MEMBERS: dict[str, frozenset[str]] = {
    "InvokeModelWithResponseStream": _COMMON_ERROR_MEMBERS | {"modelTimeoutException"},
    "ConverseStream": _COMMON_ERROR_MEMBERS,
}
# The member for errors the stream shape has no member of its own for (a copy that failed,
# a model that stopped being ready): "An error occurred while streaming the response".
FALLBACK_ERROR_MEMBER = "modelStreamErrorException"


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack("!B", len(raw_name)) + raw_name
        out += struct.pack("!BH", _STRING_HEADER, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    head = _headers(headers)
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + head + payload
    return body + struct.pack("!I", zlib.crc32(body) & 0xFFFFFFFF)


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    """An event frame (e.g. ``chunk``, ``messageStart``) with a JSON payload."""
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload, separators=(",", ":")).encode(),
    )


def chunk(body: dict[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event: the model's JSON, base64 in ``bytes``."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return event("chunk", {"bytes": base64.b64encode(raw).decode()})


def error_member(operation: str, error_name: str) -> str:
    """The stream member that carries the Bedrock error ``error_name`` (e.g. ``ThrottlingException``)
    in ``operation``'s event stream: its lowerCamel name when the shape declares it, else the fallback."""
    member = error_name[:1].lower() + error_name[1:]
    return member if member in STREAM_ERROR_MEMBERS[operation] else FALLBACK_ERROR_MEMBER


def error_frame(operation: str, error_name: str, message: str, status: int) -> bytes:
    """The exception frame for an error after streaming began; boto3 raises ``EventStreamError``
    with ``error_member(...)`` as its code and ``message`` as its message."""
    member = error_member(operation, error_name)
    fields: dict[str, Any] = {"originalStatusCode": status} if member == FALLBACK_ERROR_MEMBER else {}
    return exception(member, message, **fields)


def exception(name: str, message: str, **fields: Any) -> bytes:
    """An exception frame; ``name`` must be a member of the operation's event-stream shape."""
    return encode_message(
        {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message, **fields}).encode(),
    )
