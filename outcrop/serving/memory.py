"""Does a copy fit? Free memory from /proc/meminfo and a pure least-recently-used eviction plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class EvictionCandidate:
    """An idle ready copy of another model that could be stopped to make room."""

    copy_id: str
    model_name: str
    memory_estimate_bytes: int
    last_used_at: float


@dataclass(frozen=True)
class FitPlan:
    fits: bool
    evict: tuple[str, ...] = ()  # copy ids to stop first, least recently used first
    free_bytes: int = 0  # room before evicting
    reclaimable_bytes: int = 0  # what stopping every candidate would free


def plan_fit(needed_bytes: int, free_bytes: int, candidates: Sequence[EvictionCandidate]) -> FitPlan:
    """Which idle copies to stop (LRU first, as few as possible) so ``needed_bytes`` fit."""
    reclaimable = sum(c.memory_estimate_bytes for c in candidates)
    if needed_bytes <= free_bytes:
        return FitPlan(True, (), free_bytes, reclaimable)
    chosen: list[str] = []
    room = free_bytes
    for c in sorted(candidates, key=lambda c: c.last_used_at):
        chosen.append(c.copy_id)
        room += c.memory_estimate_bytes
        if needed_bytes <= room:
            return FitPlan(True, tuple(chosen), free_bytes, reclaimable)
    return FitPlan(False, (), free_bytes, reclaimable)


def gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"
