"""Records of local copies: a starting gateway stops what a killed gateway of its data dir left, nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from outcrop.cluster.pidfiles import (
    CopyRecord,
    Leftover,
    leftover_action,
    start_ticks,
    stop_leftovers,
    write_record,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@pytest.mark.parametrize(
    ("gateway_alive", "copy_is_it", "copy_pid_reused", "group_runs", "action"),
    [
        (True, True, False, True, Leftover.KEEP),  # a live gateway's copy (another gateway, or this one)
        (True, False, False, False, Leftover.KEEP),
        (False, True, False, True, Leftover.STOP),  # the orphan itself still runs
        (False, False, False, True, Leftover.STOP),  # the copy died, what it forked did not
        (False, False, False, False, Leftover.FORGET),  # nothing of it runs
        (False, False, True, True, Leftover.FORGET),  # its pid is another process's now
    ],
)
def test_leftover_decisions(
    gateway_alive: bool, copy_is_it: bool, copy_pid_reused: bool, group_runs: bool, action: Leftover
) -> None:
    assert (
        leftover_action(
            gateway_alive=gateway_alive,
            copy_is_it=copy_is_it,
            copy_pid_reused=copy_pid_reused,
            group_runs=group_runs,
        )
        is action
    )


def _orphan() -> subprocess.Popen[bytes]:
    """A stand-in copy: its own session, and a child of its own in the same group."""
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


def _record(
    run_dir: Path, copy_id: str, pid: int, *, gateway_alive: bool, started: int | None = None
) -> Path:
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    record = CopyRecord(
        copy_id=copy_id,
        pid=pid,
        started=start_ticks(pid) if started is None else started,  # type: ignore[arg-type]
        program=sys.executable,
        gateway_pid=os.getpid(),
        gateway_started=ticks if gateway_alive else ticks - 1,  # -1: an earlier process with this pid
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{copy_id}.json"
    path.write_text(json.dumps(asdict(record)))
    return path


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_dead_gateways_copy_and_what_it_forked_are_stopped_and_forgotten(tmp_path: Path) -> None:
    orphan = _orphan()
    try:
        time.sleep(0.3)  # let it fork its child
        path = _record(tmp_path, "copy-orphan", orphan.pid, gateway_alive=False)
        assert stop_leftovers(tmp_path) == ["copy-orphan"]
        orphan.wait(timeout=10)
        assert _group_gone(orphan.pid) and not path.exists()
    finally:
        orphan.kill()


def test_a_live_gateways_copy_is_left_running(tmp_path: Path) -> None:
    copy = _orphan()
    try:
        path = _record(tmp_path, "copy-live", copy.pid, gateway_alive=True)
        assert stop_leftovers(tmp_path) == []
        assert copy.poll() is None and path.exists()
    finally:
        os.killpg(copy.pid, 9)
        copy.wait()


def test_a_record_whose_pid_now_names_another_process_kills_nothing(tmp_path: Path) -> None:
    # The record names this very test process, but with another start time: a recycled pid.
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    path = _record(tmp_path, "copy-recycled", os.getpid(), gateway_alive=False, started=ticks - 1)
    assert stop_leftovers(tmp_path) == []
    assert not path.exists()  # we are still here, and the stale record is gone


def test_a_written_record_names_the_copy_and_this_gateway_without_its_arguments(tmp_path: Path) -> None:
    copy = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        path = write_record(tmp_path, "copy-1", copy.pid, "sleep")
        assert path is not None
        record = json.loads(path.read_text())
        assert record["pid"] == copy.pid and record["gateway_pid"] == os.getpid()
        assert record["program"] == "sleep" and "argv" not in record
    finally:
        copy.kill()
        copy.wait()
