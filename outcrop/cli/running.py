"""Which ``outcrop serve`` uses a data dir now: ``<data-dir>/server.json`` (pid and URL), kept while it serves.

``outcrop demo`` reads it before replacing its model, so it never deletes and re-imports
``demo-llama`` under a server that is already serving that data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "server.json"


@dataclass(frozen=True)
class RunningServer:
    pid: int
    url: str


def announce(data_dir: Path, url: str) -> Path:
    """Record this process as the data dir's server; returns the file to :func:`withdraw` at exit."""
    path = data_dir / FILE_NAME
    path.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    return path


def withdraw(path: Path) -> None:
    """Remove the record, if it is still this process's (another server may have replaced it).

    Best effort: a server killed by a signal leaves its record, which :func:`running_server`
    ignores once the process is gone.
    """
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def running_server(data_dir: Path) -> RunningServer | None:
    """The server recorded for ``data_dir`` if its process is still alive, else None."""
    try:
        record = json.loads((data_dir / FILE_NAME).read_text())
        pid, url = int(record["pid"]), str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not _alive(pid):
        return None
    return RunningServer(pid, url)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
