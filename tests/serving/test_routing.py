"""Least-outstanding-requests choice, the wait queue's priorities, memory fit plans."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from outcrop.serving.copies import CopyStatus, ModelCopy
from outcrop.serving.memory import (
    EvictionCandidate,
    available_gpu_memory_bytes,
    available_memory_bytes,
    gpu_index,
    parse_nvidia_smi_free,
    plan_fit,
)
from outcrop.serving.routing import (
    Priority,
    Waiter,
    WaitQueue,
    choose_copy,
    copy_request,
    slot_cap,
    with_priority,
)


def copy(
    n: int, *, in_flight: int = 0, status: CopyStatus = CopyStatus.READY, used: float = 0.0
) -> ModelCopy:
    c = ModelCopy(copy_id=f"c{n}", model_id="m", model_name="m", memory_estimate_bytes=1)
    c.status, c.in_flight, c.last_used_mono = status, in_flight, used
    return c


@pytest.mark.parametrize(
    ("copies", "cap", "exclude", "chosen"),
    [
        ([], 16, (), None),
        ([copy(1, in_flight=3), copy(2, in_flight=1), copy(3, in_flight=2)], 16, (), "c2"),
        ([copy(1, in_flight=1, used=5.0), copy(2, in_flight=1, used=2.0)], 16, (), "c2"),  # tie: LRU
        ([copy(1, in_flight=16), copy(2, in_flight=16)], 16, (), None),  # all at the per-copy cap
        ([copy(1, status=CopyStatus.STARTING), copy(2, status=CopyStatus.DRAINING)], 16, (), None),
        ([copy(1), copy(2, in_flight=5)], 16, ("c1",), "c2"),
    ],
)
def test_choose_copy_takes_the_least_loaded_ready_copy_under_the_cap(
    copies: list[ModelCopy], cap: int, exclude: tuple[str, ...], chosen: str | None
) -> None:
    got = choose_copy(copies, cap, frozenset(exclude))
    assert (got.copy_id if got else None) == chosen


def test_wait_queue_serves_online_before_batch_and_fifo_within_a_class() -> None:
    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        queue = WaitQueue()
        names = {}
        for name, prio in [
            ("b1", Priority.BATCH),
            ("o1", Priority.ONLINE),
            ("b2", Priority.BATCH),
            ("o2", Priority.ONLINE),
        ]:
            w = Waiter(loop.create_future(), prio)
            names[id(w)] = name
            queue.push(w)
        gone = list(queue.pending())[1]  # o2 gives up
        queue.abandon(gone)
        assert queue.depth == 3
        order = [names[id(w)] for w in queue.pending()]
        for w in queue.pending():
            queue.serve(w, copy(1))
        assert queue.depth == 0 and list(queue.pending()) == []
        return order

    assert asyncio.run(run()) == ["o1", "b1", "b2"]


@pytest.mark.parametrize(
    ("priority", "cap", "reserved", "expected"),
    [
        (Priority.ONLINE, 16, 2, 16),  # online may use every slot
        (Priority.BATCH, 16, 2, 14),  # batch leaves the reserve free
        (Priority.BATCH, 16, 0, 16),
        (Priority.BATCH, 2, 2, 1),  # but always gets one slot, or a job could never run
        (Priority.BATCH, 1, 4, 1),
    ],
)
def test_batch_records_leave_reserved_slots_to_online_requests(
    priority: Priority, cap: int, reserved: int, expected: int
) -> None:
    assert slot_cap(priority, cap, reserved) == expected


def test_a_batch_record_never_takes_a_copy_at_its_batch_cap() -> None:
    copies = [copy(1, in_flight=14), copy(2, in_flight=15)]
    assert choose_copy(copies, slot_cap(Priority.BATCH, 16, 2)) is None
    chosen = choose_copy(copies, slot_cap(Priority.ONLINE, 16, 2))
    assert chosen is not None and chosen.copy_id == "c1"


@pytest.mark.parametrize(
    ("body", "priority", "sent"),
    [
        ({"prompt": "x"}, Priority.ONLINE, {"prompt": "x"}),  # online: the field is left out (0)
        ({"prompt": "x", "priority": -100}, Priority.ONLINE, {"prompt": "x"}),  # a caller cannot jump
        ({"prompt": "x"}, Priority.BATCH, {"prompt": "x", "priority": 10}),  # vLLM's convention
        ({"prompt": "x", "priority": 0}, Priority.BATCH, {"prompt": "x", "priority": 10}),
    ],
)
def test_the_copy_gets_the_routes_class_as_priority(
    body: dict[str, object], priority: Priority, sent: dict[str, object]
) -> None:
    assert with_priority(body, priority) == sent


@pytest.mark.parametrize(
    ("body", "stream", "sent"),
    [
        ({"prompt": "x", "model": "alias"}, False, {"prompt": "x", "model": "m"}),
        ({"prompt": "x", "stream": True}, False, {"prompt": "x", "model": "m"}),
        (
            {"prompt": "x", "stream_options": {"include_usage": False}},
            True,
            {"prompt": "x", "model": "m", "stream": True, "stream_options": {"include_usage": True}},
        ),
    ],
)
def test_the_copy_request_is_rewritten_in_one_place(
    body: dict[str, object], stream: bool, sent: dict[str, object]
) -> None:
    assert copy_request(body, model="m", priority=Priority.ONLINE, stream=stream) == sent
    assert copy_request(body, model="m", priority=Priority.BATCH, stream=stream) == {**sent, "priority": 10}


def test_an_online_request_passes_waiting_batch_records_but_not_waiting_online_ones() -> None:
    async def run() -> list[bool]:
        loop = asyncio.get_running_loop()
        queue = WaitQueue()
        seen = [queue.has_waiter_at_or_before(Priority.ONLINE)]
        queue.push(Waiter(loop.create_future(), Priority.BATCH))
        seen += [
            queue.has_waiter_at_or_before(Priority.ONLINE),
            queue.has_waiter_at_or_before(Priority.BATCH),
        ]
        online = Waiter(loop.create_future(), Priority.ONLINE)
        queue.push(online)
        seen.append(queue.has_waiter_at_or_before(Priority.ONLINE))
        queue.abandon(online)
        seen.append(queue.has_waiter_at_or_before(Priority.ONLINE))
        return seen

    assert asyncio.run(run()) == [False, False, True, True, False]


def test_fit_plan_stops_least_recently_used_copies_only_as_needed() -> None:
    gib = 1024**3
    idle = [
        EvictionCandidate("new", "a", 4 * gib, last_used_at=90.0),
        EvictionCandidate("old", "b", 2 * gib, last_used_at=10.0),
        EvictionCandidate("mid", "c", 2 * gib, last_used_at=50.0),
    ]
    assert plan_fit(3 * gib, 4 * gib, idle).evict == ()
    assert plan_fit(5 * gib, 4 * gib, idle).evict == ("old",)
    assert plan_fit(7 * gib, 4 * gib, idle).evict == ("old", "mid")
    too_big = plan_fit(20 * gib, 4 * gib, idle)
    assert not too_big.fits and too_big.reclaimable_bytes == 8 * gib


def test_free_memory_comes_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n")
    assert available_memory_bytes(meminfo) == 2048 * 1024
    assert available_memory_bytes(tmp_path / "missing") is None
    real = available_memory_bytes()
    assert real is None or real > 0


def test_free_gpu_memory_comes_from_nvidia_smi_for_the_copies_device() -> None:
    output = "0, 81000\n1, 1024\n"
    assert parse_nvidia_smi_free(output, 1) == 1024 * 1024**2
    assert parse_nvidia_smi_free(output, 2) is None
    assert parse_nvidia_smi_free("No devices were found", 0) is None
    assert [gpu_index(d) for d in ("cpu", "cuda", "cuda:3")] == [None, 0, 3]
    calls: list[tuple[str, ...]] = []

    def fake_nvidia_smi(*args: str) -> str:
        calls.append(args)
        return output

    assert available_gpu_memory_bytes("cuda", run=fake_nvidia_smi) == 81000 * 1024**2
    assert calls == [("--query-gpu=index,memory.free", "--format=csv,noheader,nounits")]
    assert available_gpu_memory_bytes("cpu", run=fake_nvidia_smi) is None
