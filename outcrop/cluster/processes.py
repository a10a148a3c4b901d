"""A copy's process on the machine that runs it: start, signal, read its log.

Shared by the process launchers (copies on the gateway's machine) and the Ray copy actor
(copies on a node), so both start, stop and report a copy alike. Imports nothing of Outcrop
but ``envs``, so it runs on any node.

**Copies die with their starter.** A copy started with ``die_with_parent`` gets SIGKILL from
the kernel the moment the process that started it dies, however it dies (``kill -9`` too):
``PR_SET_PDEATHSIG``. The kernel sends it when the *thread* that forked the copy ends, not the
process, so every such copy is forked by one thread that lives as long as the process
(:class:`_Spawner`); a copy forked from ``asyncio.to_thread``'s pool would be killed when
that pool thread retires. Why this rather than a lifeline pipe the copy watches: it needs
nothing of the copy, so it holds for every server a template starts (vLLM, SGLang,
``transformers serve``), not only for Outcrop's worker. What it cannot reach (processes a copy
forked, which outlive their killed parent) the next gateway of the same data dir stops
(:mod:`outcrop.cluster.pidfiles`).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from outcrop.envs import subprocess_env

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _load_prctl() -> Any:
    """libc's prctl, resolved in the parent (loading a library in a forked child can deadlock)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: copies are only stopped by their gateway (and the next one's sweep)


_PRCTL = _load_prctl()


def _die_with(parent_pid: int) -> Callable[[], None]:
    prctl = _PRCTL

    def in_child() -> None:  # pragma: no cover - runs in the forked child
        """SIGKILL when the starting thread dies; at once if the parent died before prctl ran."""
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return in_child


class _Spawner:
    """The one thread that forks every copy started with ``die_with_parent`` (see the module docstring).

    A daemon thread that never returns: it ends only with the process, which is when its copies
    must die.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], concurrent.futures.Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="outcrop-copy-spawner", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._jobs.put((start, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            start, future = self._jobs.get()
            try:
                future.set_result(start())
            except BaseException as exc:
                future.set_exception(exc)


_SPAWNER = _Spawner()


def start_copy_process(
    argv: list[str],
    log_path: Path,
    *,
    die_with_parent: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (so a stop reaches what it forks), output appended
    to ``log_path``, with ``env`` added to this process's environment (a copy's token goes there,
    never in ``argv``); with ``die_with_parent`` it is killed when this process dies."""
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=subprocess_env(PYTHONUNBUFFERED="1", **(env or {})),
                start_new_session=True,
                preexec_fn=_die_with(os.getpid()) if die_with_parent else None,
            )

    return _SPAWNER.run(start) if die_with_parent else start()


def signal_process_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the copy's process group (the copy and what it forked), if it still runs."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            pass


def read_log_tail(log_path: Path, max_chars: int = 600) -> str:
    """The last lines of a copy's log file (at most ``max_chars``), for failure messages."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_chars * 4))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    tail = "\n".join(lines[-6:])
    return tail[-max_chars:]
