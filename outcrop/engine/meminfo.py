"""Free host memory: ``MemAvailable`` of /proc/meminfo.

The one reader: the engine sizes its KV cache from it (``kv_cache.py``) and the gateway's fleet
checks that a copy fits (``outcrop/serving/memory.py``). Imports nothing heavy, so the gateway
can use it without torch.
"""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def available_memory_bytes(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes; None where the file is missing (not Linux)."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            return int(parts[1]) * (1024 if parts[-1] == "kB" else 1)
    return None
