"""The exception tree's own rules, checked over the whole package."""

from __future__ import annotations

import ast
from pathlib import Path

import outcrop

PACKAGE = Path(outcrop.__file__).parent


def _bare_base_raises(path: Path) -> list[int]:
    """Lines of ``path`` that raise ``OutcropError(...)`` itself rather than a subclass."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "OutcropError":
                found.append(node.lineno)
    return found


def test_the_bare_base_class_is_never_raised() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in _bare_base_raises(path)
    ]
    assert not offenders, (
        "raise a subclass of OutcropError that says what went wrong (its wire status and "
        f"retryability come with it): {offenders}"
    )
