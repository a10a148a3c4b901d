"""The ray section: the environment spellings, and what one copy reserves."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from outcrop.cluster.launchers import LaunchRequest, get_launcher
from outcrop.cluster.ray_launcher import copy_resources, pick_node
from outcrop.config import RayConfig
from outcrop.envs import load_config
from outcrop.errors import ConfigError

GIB = 1024**3


def request(**overrides: object) -> LaunchRequest:
    values: dict[str, object] = {
        "copy_id": "copy-1",
        "model_id": "abc123def456",
        "served_name": "alpha",
        "model_dir": Path("/m"),
        "host": "127.0.0.1",
        "port": 0,
        "log_path": Path("/l"),
        "memory_estimate_bytes": 3 * GIB,
    }
    values.update(overrides)
    return LaunchRequest(**values)  # type: ignore[arg-type]


def test_the_plain_ray_address_variable_is_honoured_and_the_nested_one_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTCROP_RAY_ADDRESS", "ray://head:10001")
    assert load_config().ray.address == "ray://head:10001"
    monkeypatch.setenv("OUTCROP_RAY__ADDRESS", "auto")
    monkeypatch.setenv("OUTCROP_RAY__MODEL_RESOURCES", '{"alpha": {"num_gpus": 1}}')
    config = load_config()
    assert config.ray.address == "auto"
    assert config.ray.model_resources["alpha"].num_gpus == 1


def test_a_copy_reserves_the_default_cpus_and_its_models_memory_estimate() -> None:
    assert copy_resources(RayConfig(), request()) == {"num_cpus": 1.0, "num_gpus": 0.0, "memory": 3 * GIB}
    assert "memory" not in copy_resources(RayConfig(reserve_memory=False), request())


@pytest.mark.parametrize("key", ["alpha", "abc123def456"])
def test_a_per_model_override_by_name_or_id_replaces_the_defaults(key: str) -> None:
    cfg = RayConfig.model_validate(
        {"num_cpus": 2, "model_resources": {key: {"num_gpus": 1, "memory_bytes": GIB}}}
    )
    assert copy_resources(cfg, request()) == {"num_cpus": 2.0, "num_gpus": 1.0, "memory": GIB}
    assert copy_resources(cfg, request(served_name="beta", model_id="x"))["num_gpus"] == 0.0


def test_the_ray_launcher_without_ray_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package looks like to import
    monkeypatch.delitem(sys.modules, "outcrop.cluster.ray_launcher", raising=False)
    with pytest.raises(ConfigError, match=r"pip install .*'\.\[ray\]'"):
        get_launcher(load_config(**{"serving.launcher": "ray"}))


def node(node_id: str, cpus: float = 1, alive: bool = True, **resources: float) -> dict[str, object]:
    return {"NodeID": node_id, "Alive": alive, "Resources": {"CPU": cpus, "memory": 8 * GIB, **resources}}


@pytest.mark.parametrize(
    ("model_copies", "all_copies", "expected"),
    [
        ({}, {}, "a"),  # all equal: the first
        ({"a": 1}, {"a": 1}, "b"),  # a copy of this model on a: the other node
        ({}, {"a": 3, "b": 1}, "b"),  # no copy of this model anywhere: the emptier node
        ({"a": 1, "b": 1}, {"a": 1, "b": 2}, "a"),  # one each: the node with fewer copies in all
    ],
)
def test_the_next_copy_goes_to_the_node_with_fewest_copies_of_its_model(
    model_copies: dict[str, int], all_copies: dict[str, int], expected: str
) -> None:
    nodes = [node("head", cpus=0), node("a"), node("b"), node("dead", alive=False)]
    wanted = {"num_cpus": 0.5, "num_gpus": 0.0, "memory": GIB}
    assert pick_node(nodes, wanted, Counter(model_copies), Counter(all_copies)) == expected


def test_no_node_big_enough_leaves_the_choice_to_ray() -> None:
    wanted = {"num_cpus": 1.0, "num_gpus": 1.0}
    assert pick_node([node("a"), node("b", GPU=0)], wanted, Counter(), Counter()) is None
    assert pick_node([node("a"), node("g", GPU=1)], wanted, Counter(), Counter()) == "g"
