"""Records of the copies a gateway started on this machine, so the next gateway stops what a killed one left.

The process launchers write one small JSON file per copy under ``<data dir>/run/copies/``
(the copy's pid, which is also its process group, its start time and program, and the
gateway's pid and start time) and remove it when the copy is released. A copy normally dies
with its gateway (``PR_SET_PDEATHSIG``, :mod:`outcrop.cluster.processes`); what can outlive a
``kill -9`` of the gateway are processes the copy forked (a server's engine processes). So
when a gateway starts, :func:`stop_leftovers` reads the records of its data dir and, for each
whose gateway is dead, kills the copy's process group if anything of it still runs.

A pid is only trusted with its start time (``/proc/<pid>/stat``): pid and start time name one
process for the machine's uptime, so a record never kills an unrelated process that got a
recycled pid (a command-line match would be weaker, and servers such as vLLM rename their
processes). A group
whose leader is gone is still the copy's: Linux does not hand out a pid while it is in use
as a process group id. Records of gateways that are alive (another gateway on the same data
dir, or this process) are left alone. Linux only: elsewhere nothing is recorded.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("outcrop.cluster")

RECORD_SUFFIX = ".json"


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None if it does not run (or is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):
        return None  # exited, not yet reaped
    return int(fields[19])  # field 22 of proc(5): starttime


def group_runs(pgid: int) -> bool:
    """Whether any process is still in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class CopyRecord:
    copy_id: str
    pid: int  # the copy's pid, and its process group id (it runs in its own session)
    started: int  # its start time, from /proc/<pid>/stat
    program: str  # argv[0], for a person reading the record (the rest may hold the copy's token)
    gateway_pid: int
    gateway_started: int


class Leftover(enum.Enum):
    """What a starting gateway does with a record it finds."""

    KEEP = "keep"  # its gateway is alive: that gateway's copy, not a leftover
    STOP = "stop"  # its gateway is dead and the copy, or what it forked, still runs: kill the group
    FORGET = "forget"  # nothing of it runs (or its pid now belongs to another process): drop the record


def leftover_action(
    *, gateway_alive: bool, copy_is_it: bool, copy_pid_reused: bool, group_runs: bool
) -> Leftover:
    """The decision for one record.

    ``copy_is_it``: the recorded pid runs with the recorded start time.
    ``copy_pid_reused``: the pid runs, but as another process (so the old group is gone).
    ``group_runs``: some process is in the process group numbered like the copy's pid.
    """
    if gateway_alive:
        return Leftover.KEEP
    if copy_is_it:
        return Leftover.STOP
    if copy_pid_reused:
        return Leftover.FORGET
    return Leftover.STOP if group_runs else Leftover.FORGET


def write_record(run_dir: Path, copy_id: str, pid: int, program: str) -> Path | None:
    """Record a copy this process just started; the record's path (None where /proc is missing)."""
    started, gateway_started = start_ticks(pid), start_ticks(os.getpid())
    if started is None or gateway_started is None:
        return None
    record = CopyRecord(copy_id, pid, started, program, os.getpid(), gateway_started)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{copy_id}{RECORD_SUFFIX}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)
    return path


def read_record(path: Path) -> CopyRecord | None:
    try:
        return CopyRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def judge(record: CopyRecord) -> Leftover:
    """:func:`leftover_action` for a record, from what runs on this machine now."""
    ticks = start_ticks(record.pid)
    return leftover_action(
        gateway_alive=start_ticks(record.gateway_pid) == record.gateway_started,
        copy_is_it=ticks == record.started,
        copy_pid_reused=ticks is not None and ticks != record.started,
        group_runs=group_runs(record.pid),
    )


def stop_leftovers(run_dir: Path) -> list[str]:
    """Kill the process groups of copies whose gateway died; the ids of the copies stopped."""
    if not run_dir.is_dir():
        return []
    stopped = []
    for path in sorted(run_dir.glob(f"*{RECORD_SUFFIX}")):
        record = read_record(path)
        if record is None:
            path.unlink(missing_ok=True)  # half-written by a gateway killed mid-write
            continue
        action = judge(record)
        if action is Leftover.KEEP:
            continue
        if action is Leftover.STOP:
            try:
                os.killpg(record.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            stopped.append(record.copy_id)
        path.unlink(missing_ok=True)
    if stopped:
        log.warning(
            "stopped copies left running by a gateway that died",
            extra={"copies": stopped, "run_dir": str(run_dir)},
        )
    return stopped
