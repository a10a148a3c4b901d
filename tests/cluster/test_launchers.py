"""The process launchers: each copy's token reaches it off the command line, and copies die with their gateway."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outcrop.cluster.launchers import CommandLauncher, LaunchRequest, LocalLauncher
from outcrop.config import ServingConfig
from outcrop.envs import COPY_TOKEN_ENV


def request(**overrides: object) -> LaunchRequest:
    values: dict[str, object] = {
        "copy_id": "copy-1",
        "model_id": "abc123def456",
        "served_name": "alpha",
        "model_dir": Path("/models/alpha"),
        "host": "127.0.0.1",
        "port": 8123,
        "log_path": Path("/l"),
    }
    values.update(overrides)
    return LaunchRequest(**values)  # type: ignore[arg-type]


def command_launcher(template: str) -> CommandLauncher:
    return CommandLauncher(ServingConfig(launcher="command", command_template=template))


def test_every_launch_gets_its_own_token_which_repr_never_shows() -> None:
    first, second = request(), request()
    assert first.token != second.token and len(first.token) >= 40
    assert first.token not in repr(first)


def test_the_local_launcher_passes_the_token_in_the_environment_not_the_command_line() -> None:
    launcher = LocalLauncher(ServingConfig())
    req = request()
    assert req.token not in " ".join(launcher.command(req))
    assert launcher.copy_env(req) == {COPY_TOKEN_ENV: req.token}


def test_leading_assignments_of_a_template_become_the_copys_environment_with_the_token() -> None:
    launcher = command_launcher(
        "VLLM_API_KEY={api_key} VLLM_LOGGING_LEVEL=WARNING vllm serve {model_dir} --port {port}"
    )
    req = request()
    assert launcher.command(req) == ["vllm", "serve", "/models/alpha", "--port", "8123"]
    assert launcher.copy_env(req) == {
        COPY_TOKEN_ENV: req.token,
        "VLLM_API_KEY": req.token,
        "VLLM_LOGGING_LEVEL": "WARNING",
    }


def test_an_api_key_placeholder_in_an_argument_is_filled_with_the_token() -> None:
    launcher = command_launcher("python -m sglang.launch_server --port {port} --api-key {api_key}")
    req = request()
    assert launcher.command(req)[-2:] == ["--api-key", req.token]


@pytest.mark.parametrize(
    ("template", "warned"),
    [
        ("transformers serve {model_dir} --port {port}", True),
        ("VLLM_API_KEY={api_key} vllm serve {model_dir} --port {port}", False),
        ("python -m outcrop.engine.worker --model-dir {model_dir} --port {port}", False),  # reads it itself
        ("python -m outcrop.testing.nullcopy --port {port}", False),
    ],
)
def test_a_template_that_does_not_pass_the_token_warns_that_its_copies_are_open(
    template: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="outcrop.cluster"):
        command_launcher(template)
    messages = [r.getMessage() for r in caplog.records if "does not pass the copy's token" in r.getMessage()]
    assert bool(messages) == warned
    if warned:
        assert "{api_key}" in messages[0] and "anyone" in messages[0]


def test_a_template_of_only_assignments_is_refused_with_an_example() -> None:
    from outcrop.errors import ConfigError

    with pytest.raises(ConfigError, match="only environment variables"):
        command_launcher("VLLM_API_KEY={api_key}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_copy_started_from_a_short_lived_thread_outlives_the_thread_but_not_its_process(
    tmp_path: Path,
) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: copies are forked by a thread that
    lives as long as the process, so a copy launched from a pool thread that then ends lives on,
    and dies with the process when that is killed (kill -9)."""
    script = f"""
import sys, threading, time
from pathlib import Path
from outcrop.cluster.processes import start_copy_process
box = []
t = threading.Thread(target=lambda: box.append(
    start_copy_process(["sleep", "60"], Path({str(tmp_path / "copy.log")!r}), die_with_parent=True)))
t.start(); t.join()
print(box[0].pid, flush=True)
time.sleep(60)
"""
    starter = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert starter.stdout is not None
        copy_pid = int(starter.stdout.readline())
        time.sleep(0.5)  # the thread that asked for the copy has ended
        assert _alive(copy_pid)
        starter.kill()
        starter.wait()
        assert _gone_within(copy_pid, 10.0)
    finally:
        starter.kill()


def _alive(pid: int) -> bool:
    from outcrop.cluster.pidfiles import start_ticks

    return start_ticks(pid) is not None


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_gateways_launcher_first_stops_the_copies_a_killed_gateway_of_its_data_dir_left(
    tmp_path: Path,
) -> None:
    import json

    from outcrop.cluster.pidfiles import start_ticks

    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ticks, gateway_ticks = start_ticks(orphan.pid), start_ticks(os.getpid())
        assert ticks is not None and gateway_ticks is not None
        record = {
            "copy_id": "copy-left",
            "pid": orphan.pid,
            "started": ticks,
            "program": "sleep",
            "gateway_pid": os.getpid(),
            "gateway_started": gateway_ticks - 1,  # an earlier gateway with this pid: dead
        }
        (tmp_path / "copy-left.json").write_text(json.dumps(record))
        LocalLauncher(ServingConfig(), run_dir=tmp_path)
        assert orphan.wait(timeout=10) == -9
        assert list(tmp_path.iterdir()) == []
    finally:
        orphan.kill()
