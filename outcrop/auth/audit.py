"""The audit log: every control-plane action and every refused request, as JSONL.

Records say who, what, on which resource, when and with what outcome; never secrets, keys,
signatures or prompt text.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

from outcrop.store.datadir import PRIVATE_DIR_MODE, open_private_append


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
