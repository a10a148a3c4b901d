"""Serving through real copy processes: null copies started by the ``command`` launcher."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from outcrop.config import OutcropConfig
from outcrop.errors import (
    ConfigError,
    InvalidRequestError,
    ModelFailedError,
    ModelNotReadyError,
    ModelTimeoutError,
    NotFoundError,
    ServiceUnavailableError,
)
from outcrop.registry.service import Registry
from outcrop.serving.copies import CopyStatus
from outcrop.serving.service import ColdStartPolicy, Priority, Serving
from tests.serving.conftest import running

pytestmark = pytest.mark.anyio

HOLD = ColdStartPolicy(wait=True, max_wait_seconds=30)
FAIL_FAST = ColdStartPolicy(wait=False, max_wait_seconds=30)
PROMPT = {"prompt": "Hello", "max_tokens": 3}

Config = Callable[..., OutcropConfig]


async def eventually(check: Callable[[], bool], timeout_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def states(serving: Serving) -> list[str]:
    return [c.state.value for c in serving.copies()]


async def test_cold_start_holds_the_request_until_a_copy_is_ready(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config("--startup-delay-ms", "300"), serving_registry) as serving:
        answer = await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        assert answer["choices"][0]["text"] == "null copy answer"
        assert answer["model"] == "alpha"  # the router names the served model
        (info,) = serving.copies()
        assert info.state is CopyStatus.READY and info.model_name == "alpha" and info.pid
        assert info.in_flight == 0 and info.ready_at is not None and info.last_used_at is not None
        stats = serving.stats()["models"]["alpha"]
        assert stats["cold_starts"] == 1 and stats["cold_start_seconds_last"] >= 0.3
        assert stats["copies"]["Ready"] == 1 and stats["queue_depth"] == 0


async def test_cold_start_without_wait_answers_model_not_ready_then_serves(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(), serving_registry) as serving:
        arn = serving_registry.model_arn(serving_registry.get_model("alpha"))
        with pytest.raises(ModelNotReadyError) as info:
            await serving.post(arn, "/v1/completions", PROMPT, cold_start=FAIL_FAST)
        assert 2 <= info.value.retry_after_seconds <= 5
        assert states(serving) == ["Starting"]
        await eventually(lambda: states(serving) == ["Ready"])
        answer = await serving.post(arn, "/v1/chat/completions", {"messages": []}, cold_start=FAIL_FAST)
        assert answer["choices"][0]["message"]["content"] == "null copy answer"


async def test_a_model_override_decides_cold_start_unless_the_request_does(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config(**{"serving.model_overrides": {"alpha": {"cold_start_wait": True}}})
    async with running(config, serving_registry) as serving:
        answer = await serving.post("alpha", "/v1/completions", PROMPT, cold_start=FAIL_FAST)
        assert answer["choices"]
        with pytest.raises(ModelNotReadyError):
            await serving.post(
                "beta",
                "/v1/completions",
                PROMPT,
                cold_start=ColdStartPolicy(False, 30, from_request=True),
            )


async def test_unknown_model_is_not_found(serving_config: Config, serving_registry: Registry) -> None:
    async with running(serving_config(), serving_registry) as serving:
        with pytest.raises(NotFoundError):
            await serving.post("nope", "/v1/completions", PROMPT, cold_start=HOLD)


async def test_stream_yields_each_chunk_but_not_done(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(), serving_registry) as serving:
        chunks = [c async for c in serving.stream("alpha", "/v1/completions", PROMPT, cold_start=HOLD)]
        assert "".join(c["choices"][0]["text"] for c in chunks) == "null copy answer"
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        chat = [
            c
            async for c in serving.stream("alpha", "/v1/chat/completions", {"messages": []}, cold_start=HOLD)
        ]
        assert [c["choices"][0]["delta"]["content"] for c in chat] == ["null", " copy", " answer"]
        assert serving.copies()[0].in_flight == 0


async def test_a_stream_abandoned_by_its_client_frees_the_slot_at_once(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config("--chunk-delay-ms", "800"), serving_registry) as serving:
        await serving.warm("alpha")
        stream = serving.stream("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        first = await anext(stream)
        assert first["choices"][0]["text"] == "null"
        assert serving.copies()[0].in_flight == 1
        started = time.monotonic()
        await stream.aclose()  # what the API does when its client hangs up
        assert serving.copies()[0].in_flight == 0 and time.monotonic() - started < 1


async def test_a_copy_4xx_is_an_invalid_request_with_the_copy_message(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(), serving_registry) as serving:
        body = {"prompt": "Hello", "max_tokens": 10_000}
        with pytest.raises(InvalidRequestError) as info:
            await serving.post("alpha", "/v1/completions", body, cold_start=HOLD)
        assert "10000 max_tokens" in info.value.message and info.value.param == "max_tokens"
        assert info.value.fields["code"] == "context_length_exceeded"
        with pytest.raises(InvalidRequestError):
            async for _ in serving.stream("alpha", "/v1/completions", body, cold_start=HOLD):
                pass
        tokens = await serving.post("alpha", "/v1/tokenize", {"prompt": "abc"}, cold_start=HOLD)
        assert tokens["count"] == 3


async def test_concurrent_requests_spread_over_copies_least_outstanding_first(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config("--delay-ms", "300", **{"serving.defaults.max_copies": 2})
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha", copies=2)
        assert states(serving) == ["Ready", "Ready"]
        answers = await asyncio.gather(
            *(serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD) for _ in range(6))
        )
        by_copy: dict[str, int] = {}
        for a in answers:
            by_copy[a["system_fingerprint"]] = by_copy.get(a["system_fingerprint"], 0) + 1
        assert sorted(by_copy.values()) == [3, 3]


async def test_per_copy_cap_queues_requests_and_a_full_queue_sheds_load(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config(
        "--delay-ms",
        "300",
        **{"serving.defaults.max_concurrency_per_copy": 1, "serving.max_queue_per_model": 1},
    )
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha")
        results = await asyncio.gather(
            *(serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD) for _ in range(3)),
            return_exceptions=True,
        )
        shed = [r for r in results if isinstance(r, ServiceUnavailableError)]
        assert len(shed) == 1 and "max_queue_per_model" in shed[0].message
        assert sum(isinstance(r, dict) for r in results) == 2
        assert serving.stats()["models"]["alpha"]["queue_depth"] == 0


async def test_online_requests_go_ahead_of_batch_requests(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config("--delay-ms", "150", **{"serving.defaults.max_concurrency_per_copy": 1})
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha")
        finished: list[str] = []

        async def call(name: str, priority: Priority) -> None:
            await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD, priority=priority)
            finished.append(name)

        first = asyncio.create_task(call("first", Priority.ONLINE))
        await asyncio.sleep(0.05)
        batch = [asyncio.create_task(call(f"batch{i}", Priority.BATCH)) for i in range(2)]
        await asyncio.sleep(0.01)
        online = asyncio.create_task(call("online", Priority.ONLINE))
        await asyncio.gather(first, *batch, online)
        assert finished == ["first", "online", "batch0", "batch1"]


async def test_batch_records_leave_reserved_slots_so_online_requests_start_at_once(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config(
        "--delay-ms",
        "300",
        **{"serving.defaults.max_concurrency_per_copy": 3, "batch.online_reserved_slots_per_copy": 2},
    )
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha")
        finished: list[str] = []

        async def call(name: str, priority: Priority) -> None:
            await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD, priority=priority)
            finished.append(name)

        batch = [asyncio.create_task(call(f"batch{i}", Priority.BATCH)) for i in range(3)]
        await asyncio.sleep(0.1)
        assert serving.copies()[0].in_flight == 1  # 3 slots, 2 kept for online traffic
        assert serving.stats()["models"]["alpha"]["queue_depth"] == 2
        online = asyncio.create_task(call("online", Priority.ONLINE))
        await asyncio.sleep(0.05)
        assert serving.copies()[0].in_flight == 2  # it passed the waiting batch records
        await asyncio.gather(*batch, online)
        assert finished == ["batch0", "online", "batch1", "batch2"]


async def test_deadline_raises_model_timeout_and_frees_the_slot(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config("--delay-ms", "1500"), serving_registry) as serving:
        await serving.warm("alpha")
        started = time.monotonic()
        with pytest.raises(ModelTimeoutError) as info:
            await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD, deadline_seconds=0.3)
        assert time.monotonic() - started < 2
        assert "0.3 s" in info.value.message
        with pytest.raises(ModelTimeoutError):
            async for _ in serving.stream(
                "alpha", "/v1/completions", PROMPT, cold_start=HOLD, deadline_seconds=0.3
            ):
                pass
        assert serving.copies()[0].in_flight == 0


async def test_a_copy_that_dies_before_answering_is_retried_on_another_copy(
    serving_config: Config, serving_registry: Registry, tmp_path: Path
) -> None:
    crash = tmp_path / "crash"
    config = serving_config("--crash-file", str(crash), **{"serving.defaults.max_copies": 2})
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha", copies=2)
        crash.touch()
        answer = await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        assert answer["choices"][0]["text"] == "null copy answer"
        assert not crash.exists()  # one copy took the crash
        await eventually(lambda: serving.stats()["models"]["alpha"]["copy_failures"] == 1, 3)
        stats = serving.stats()["models"]["alpha"]
        assert stats["copy_failures"] == 1 and "exited with code 1" in stats["last_failure"]
        assert "crash requested" in stats["last_failure"]  # the copy's own output, for the operator
        assert states(serving) == ["Ready"]
        # After the restart backoff a second copy can start again; the stream path retries too.
        await asyncio.sleep(0.5)
        await serving.warm("alpha", copies=2)
        crash.touch()
        chunks = [c async for c in serving.stream("alpha", "/v1/completions", PROMPT, cold_start=HOLD)]
        assert len(chunks) == 3 and not crash.exists()
        await eventually(lambda: serving.stats()["models"]["alpha"]["copy_failures"] == 2, 3)


async def test_a_copy_that_dies_mid_stream_ends_the_stream_with_model_failed(
    serving_config: Config, serving_registry: Registry, tmp_path: Path
) -> None:
    crash = tmp_path / "crash"
    config = serving_config("--crash-file", str(crash), "--crash-point", "mid_stream")
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha")
        crash.touch()
        got: list[dict[str, Any]] = []
        with pytest.raises(ModelFailedError) as info:
            async for chunk in serving.stream("alpha", "/v1/completions", PROMPT, cold_start=HOLD):
                got.append(chunk)
        assert len(got) == 1 and "stopped while streaming" in info.value.message
        # The next request cold-starts a replacement (after the backoff).
        answer = await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        assert answer["choices"]


async def test_a_copy_that_cannot_start_fails_waiting_requests_with_its_reason_and_backs_off(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config("--fail-start", **{"serving.restart_backoff_initial_seconds": 30.0})
    async with running(config, serving_registry) as serving:
        with pytest.raises(ServiceUnavailableError) as info:
            await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        assert "exited with code 1" in info.value.message and "--fail-start" in info.value.message
        with pytest.raises(ServiceUnavailableError) as again:
            await serving.post("alpha", "/v1/completions", PROMPT, cold_start=FAIL_FAST)
        assert "next start is allowed in" in again.value.message and again.value.retry_after_seconds > 20
        assert serving.stats()["models"]["alpha"]["start_failures"] == 1
        assert serving.copies() == []


async def test_a_cold_start_that_outlasts_the_wait_is_a_503_not_a_hang(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config("--startup-delay-ms", "5000"), serving_registry) as serving:
        with pytest.raises(ServiceUnavailableError) as info:
            await serving.post("alpha", "/v1/completions", PROMPT, cold_start=ColdStartPolicy(True, 0.5))
        assert "within 0.5 s" in info.value.message and info.value.retry_after_seconds > 0


async def test_idle_model_scales_to_zero_after_the_window(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config(**{"serving.defaults.idle_seconds_before_scale_down": 0.5})
    async with running(config, serving_registry) as serving:
        await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        pid = serving.copies()[0].pid
        assert pid is not None
        await eventually(lambda: serving.copies() == [])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)  # cold starts again
        assert serving.stats()["models"]["alpha"]["cold_starts"] == 2


async def test_load_above_the_target_scales_up_and_min_copies_are_kept_warm(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config(
        "--delay-ms",
        "400",
        **{
            "serving.defaults.max_copies": 2,
            "serving.defaults.target_concurrency_per_copy": 1,
            "serving.model_overrides": {"beta": {"min_copies": 1}},
        },
    )
    async with running(config, serving_registry) as serving:
        await eventually(lambda: [c.model_name for c in serving.copies()] == ["beta"])
        await serving.warm("alpha")
        calls = [serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD) for _ in range(3)]
        done = asyncio.gather(*calls)
        await eventually(lambda: sum(c.model_name == "alpha" for c in serving.copies()) == 2, 5)
        await done


async def test_a_full_machine_stops_idle_copies_of_other_models_first(
    serving_config: Config, serving_registry: Registry
) -> None:
    estimate = serving_registry.get_model("alpha").memory_estimate_bytes
    config = serving_config("--delay-ms", "500", **{"serving.memory_limit_bytes": int(estimate * 1.5)})
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha")
        await serving.post("beta", "/v1/completions", PROMPT, cold_start=HOLD)
        assert [c.model_name for c in serving.copies()] == ["beta"]
        busy = asyncio.create_task(serving.post("beta", "/v1/completions", PROMPT, cold_start=HOLD))
        await asyncio.sleep(0.1)
        with pytest.raises(ServiceUnavailableError) as info:
            await serving.post("gamma", "/v1/completions", PROMPT, cold_start=HOLD)
        assert "needs about" in info.value.message and "serving.memory_limit_bytes" in info.value.message
        await busy


async def test_stop_drains_requests_in_flight_and_ends_every_copy(
    serving_config: Config, serving_registry: Registry
) -> None:
    serving = Serving(serving_config("--delay-ms", "500"), serving_registry)
    await serving.start()
    await serving.warm("alpha")
    pid = serving.copies()[0].pid
    assert pid is not None
    in_flight = asyncio.create_task(serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD))
    await asyncio.sleep(0.1)
    await serving.stop()
    assert (await in_flight)["choices"]
    assert serving.copies() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_dead_copy_of_a_kept_warm_model_is_replaced_after_the_backoff(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config(**{"serving.model_overrides": {"alpha": {"min_copies": 1}}})
    async with running(config, serving_registry) as serving:
        await eventually(lambda: states(serving) == ["Ready"])
        first = serving.copies()[0]
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        await eventually(
            lambda: (
                [c.copy_id for c in serving.copies() if c.state is CopyStatus.READY]
                not in ([], [first.copy_id])
            )
        )
        stats = serving.stats()["models"]["alpha"]
        assert stats["copy_failures"] == 1 and "exited with code -9" in stats["last_failure"]
        assert (await serving.post("alpha", "/v1/completions", PROMPT, cold_start=FAIL_FAST))["choices"]


async def test_requests_waiting_when_a_serving_copy_dies_are_served_by_its_replacement(
    serving_config: Config, serving_registry: Registry
) -> None:
    # One slot, slow answers: one request in flight, one queued, when the only copy is killed.
    config = serving_config("--delay-ms", "1000", **{"serving.defaults.max_concurrency_per_copy": 1})
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha")
        first = serving.copies()[0]
        assert first.pid is not None
        requests = [
            asyncio.create_task(serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD))
            for _ in range(2)
        ]
        await eventually(lambda: serving.stats()["models"]["alpha"]["queue_depth"] == 1)
        os.kill(first.pid, signal.SIGKILL)
        # The restart backoff (0.2 s) is shorter than a request holds: they wait, then are served.
        answers = await asyncio.gather(*requests)
        assert [a["choices"][0]["text"] for a in answers] == ["null copy answer"] * 2
        stats = serving.stats()["models"]["alpha"]
        assert stats["copy_failures"] == 1 and first.copy_id in stats["last_failure"]  # exited, or refused
        assert [c.copy_id for c in serving.copies()] != [first.copy_id]


async def test_stop_model_drains_its_copies_and_forgets_it(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(), serving_registry) as serving:
        await serving.warm("alpha")
        await serving.warm("beta")
        assert await serving.stop_model(serving_registry.get_model("alpha").id) == 1
        assert [c.model_name for c in serving.copies()] == ["beta"]
        assert "alpha" not in serving.stats()["models"]


async def test_a_copy_that_stops_answering_health_checks_is_failed_and_killed(
    serving_config: Config, serving_registry: Registry
) -> None:
    config = serving_config(
        **{"serving.health_timeout_seconds": 0.3, "serving.health_failures_before_failed": 2}
    )
    async with running(config, serving_registry) as serving:
        await serving.warm("alpha")
        pid = serving.copies()[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive but wedged
        await eventually(lambda: serving.copies() == [], 10)
        stats = serving.stats()["models"]["alpha"]
        assert stats["copy_failures"] == 1 and "2 health checks of /health failed" in stats["last_failure"]
        await eventually(lambda: not _alive(pid), 10)


async def test_stop_is_bounded_when_a_copy_ignores_sigterm(
    serving_config: Config, serving_registry: Registry
) -> None:
    serving = Serving(serving_config(**{"serving.drain_timeout_seconds": 0.5}), serving_registry)
    await serving.start()
    await serving.warm("alpha")
    pid = serving.copies()[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # SIGTERM cannot end a stopped process; SIGKILL can
    started = time.monotonic()
    await serving.stop()
    assert time.monotonic() - started < 5
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_copies_answer_over_pooled_connections(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(), serving_registry) as serving:
        await serving.warm("alpha")
        url = serving.copies()[0].url
        assert url is not None and httpx.get(f"{url}/health").status_code == 200
        for _ in range(20):
            await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        assert httpx.get(f"{url}/metrics").status_code == 401  # the copy's token is the gateway's alone
        (copy,) = serving.fleet.all_copies()
        assert copy.launched is not None
        token = {"Authorization": f"Bearer {copy.launched.token}"}
        metrics = httpx.get(f"{url}/metrics", headers=token).text
        assert "nullcopy_requests_total 20" in metrics


def test_model_overrides_replace_only_the_fields_they_set(
    serving_config: Config, serving_registry: Registry
) -> None:
    alpha, beta, gamma = (serving_registry.get_model(n) for n in ("alpha", "beta", "gamma"))
    config = serving_config(
        **{
            "serving.defaults.max_copies": 3,
            "serving.defaults.idle_seconds_before_scale_down": 60,
            "serving.model_overrides": {"alpha": {"min_copies": 1}, beta.id: {"min_copies": 5}},
        }
    )
    serving = Serving(config, serving_registry)
    a, b, g = serving.spec_for(alpha), serving.spec_for(beta), serving.spec_for(gamma)
    assert (a.min_copies, a.max_copies, a.idle_seconds_before_scale_down) == (1, 3, 60)
    assert (b.min_copies, b.max_copies) == (5, 5)  # keeping copies warm wins over max_copies
    assert (g.min_copies, g.max_copies, g.max_concurrency_per_copy) == (0, 3, 16)


async def test_default_min_copies_warms_every_imported_model_at_start(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(**{"serving.defaults.min_copies": 1}), serving_registry) as serving:
        await eventually(
            lambda: (
                sorted(c.model_name for c in serving.copies() if c.state is CopyStatus.READY)
                == ["alpha", "beta", "gamma"]
            )
        )


def test_launchers_are_chosen_by_name_and_templates_are_checked(
    serving_config: Config, serving_registry: Registry
) -> None:
    with pytest.raises(ConfigError, match="valid: command, local, ray"):
        Serving(serving_config(**{"serving.launcher": "slurm"}), serving_registry)
    with pytest.raises(ConfigError, match="unknown or malformed placeholder"):
        Serving(
            serving_config(**{"serving.command_template": "srv --port {port} --gpu {gpu}"}), serving_registry
        )
    with pytest.raises(ConfigError, match="no \\{port\\} placeholder"):
        Serving(serving_config(**{"serving.command_template": "srv --model {model_dir}"}), serving_registry)
    with pytest.raises(ConfigError, match="command_template is empty"):
        Serving(serving_config(**{"serving.command_template": None}), serving_registry)
