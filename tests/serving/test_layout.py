"""The serving package keeps its split: each module imports only what its responsibility needs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import outcrop.serving

SERVING = Path(outcrop.serving.__file__).parent


def imported_modules(name: str) -> set[str]:
    tree = ast.parse((SERVING / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("module", "must_not_import"),
    [
        # the request path neither launches, scales nor coordinates gateways
        ("router", {"outcrop.serving.controller", "outcrop.serving.gateways", "outcrop.serving.autoscaler"}),
        ("router", {"outcrop.cluster.launchers", "outcrop.store.leases"}),
        # the fleet launches, probes and stops: no routing, no scaling policy, no leases
        ("fleet", {"outcrop.serving.router", "outcrop.serving.routing", "outcrop.serving.autoscaler"}),
        ("fleet", {"outcrop.serving.controller", "outcrop.serving.gateways", "outcrop.store.leases"}),
        # the decisions stay pure
        ("autoscaler", {"asyncio", "time", "outcrop.serving.fleet", "outcrop.serving.router"}),
        # coordination does not route requests
        ("gateways", {"outcrop.serving.router", "outcrop.serving.routing"}),
    ],
)
def test_a_serving_module_does_not_import_another_responsibility(
    module: str, must_not_import: set[str]
) -> None:
    assert imported_modules(module) & must_not_import == set()


def test_only_gateway_coordination_changes_who_owns_a_copy() -> None:
    writers = [p.name for p in SERVING.glob("*.py") if ".owned = " in p.read_text()]
    assert writers == ["gateways.py"]
