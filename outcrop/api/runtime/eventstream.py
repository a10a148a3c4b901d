"""AWS event-stream framing (``application/vnd.amazon.eventstream``), as botocore's parser reads it.

A message is::

    [total length: u32][headers length: u32][prelude CRC32: u32][headers][payload][message CRC32: u32]

Each header is ``[name length: u8][name][type: u8 = 7 (string)][value length: u16][value]``.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING_HEADER = 7


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


def exception(name: str, message: str, **fields: Any) -> bytes:
    """An exception frame: botocore raises ``client.exceptions.<name>`` while iterating the stream."""
    return encode_message(
        {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message, **fields}).encode(),
    )
