"""The audit log: every control-plane action and every refused request, as JSONL.

Records say who, what, on which resource, when and with what outcome; never secrets, keys,
signatures or prompt text.

:meth:`AuditLog.page` reads it newest first without loading the file (``GET /outcrop/audit``): it
reads backwards from a byte offset in blocks, and the offset where a page stops is the next page's
token.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from outcrop.store.datadir import PRIVATE_DIR_MODE, open_private_append

# Why 64 KiB: a few hundred records per read; a page of 100 usually takes one or two reads.
READ_BLOCK_BYTES = 64 * 1024


class AuditLog:
    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._lock = threading.Lock()

    def write(self, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            **fields,
        }
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            with os.fdopen(open_private_append(self.path), "a", encoding="utf-8") as fh:
                fh.write(line)

    def page(self, before: int | None, max_results: int) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``max_results`` records of the lines that start before byte ``before`` (None = the whole
        file), newest first, and the offset to pass for older ones (None: there are no more). A line
        that is not a JSON object (a torn write after a crash) is skipped."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return [], None
        records: list[dict[str, Any]] = []
        with open(self.path, "rb") as fh:
            for start, line in _lines_backwards(fh, size if before is None else min(before, size)):
                record = _parse(line)
                if record is None:
                    continue
                records.append(record)
                if len(records) == max_results:
                    return records, (start if start > 0 else None)
        return records, None


def _lines_backwards(fh: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every line in bytes [0, end) of ``fh``, last first, reading blocks from the end."""
    position = end
    carry = b""  # the start of a line that began before the block read last
    while position > 0:
        start = max(0, position - READ_BLOCK_BYTES)
        fh.seek(start)
        parts = (fh.read(position - start) + carry).split(b"\n")
        if start > 0:
            carry = parts.pop(0)
            offset = start + len(carry) + 1
        else:
            carry, offset = b"", 0
        found = []
        for part in parts:
            found.append((offset, part))
            offset += len(part) + 1
        yield from reversed(found)
        position = start


def _parse(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
