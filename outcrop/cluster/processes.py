"""A copy's process on the machine that runs it: start, signal, read its log.

Shared by the process launchers (copies on the gateway's machine) and the Ray copy actor
(copies on a node), so both start, stop and report a copy alike. Imports nothing of Outcrop
but ``envs``, so it runs on any node.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from pathlib import Path

from outcrop.envs import subprocess_env

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In the copy's child process: SIGKILL when the process that started it dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def start_copy_process(
    argv: list[str], log_path: Path, *, die_with_parent: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (so a stop reaches what it forks), output appended
    to ``log_path``; with ``die_with_parent`` it is killed when the starting process dies."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(PYTHONUNBUFFERED="1"),
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


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
