"""A copy must run on any node: the engine imports nothing of Outcrop but config, errors, envs and logs."""

from __future__ import annotations

import ast
from pathlib import Path

import outcrop.engine

ALLOWED = ("outcrop.engine", "outcrop.config", "outcrop.errors", "outcrop.envs", "outcrop.logs")


def test_engine_imports_only_config_errors_and_envs_from_outcrop() -> None:
    package = Path(outcrop.engine.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if (name == "outcrop" or name.startswith("outcrop.")) and not name.startswith(ALLOWED):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
