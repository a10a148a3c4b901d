"""Does a copy fit? Free memory from /proc/meminfo and a pure least-recently-used eviction plan."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The one MemAvailable reader lives with the engine (which sizes its KV cache from it).
from outcrop.engine.meminfo import MEMINFO as MEMINFO
from outcrop.engine.meminfo import available_memory_bytes as available_memory_bytes

NVIDIA_SMI_QUERY = ("--query-gpu=index,memory.free", "--format=csv,noheader,nounits")
# Why 10 s: nvidia-smi answers in ~50 ms; a wedged driver must not hold a copy start for long.
NVIDIA_SMI_TIMEOUT_SECONDS = 10.0


def gpu_index(device: str) -> int | None:
    """``cuda`` -> 0, ``cuda:3`` -> 3, anything else -> None (not a GPU copy)."""
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def parse_nvidia_smi_free(output: str, index: int) -> int | None:
    """Free bytes of GPU ``index`` from ``nvidia-smi --query-gpu=index,memory.free`` CSV (MiB)."""
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) == index and parts[1].isdigit():
            return int(parts[1]) * 1024**2
    return None


def available_gpu_memory_bytes(device: str, run: Callable[..., str] | None = None) -> int | None:
    """Free memory of the GPU ``device`` names, from nvidia-smi; None when it cannot be read."""
    index = gpu_index(device)
    if index is None:
        return None
    if run is None:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None

        def run(*args: str) -> str:
            done = subprocess.run(
                [exe, *args], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_SECONDS, check=False
            )
            return done.stdout if done.returncode == 0 else ""

    try:
        return parse_nvidia_smi_free(run(*NVIDIA_SMI_QUERY), index)
    except (OSError, subprocess.SubprocessError):
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
