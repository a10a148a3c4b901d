"""The audit log read newest first in pages (AuditLog.page), whatever the block size."""

from __future__ import annotations

from pathlib import Path

import pytest

from outcrop.auth import audit
from outcrop.auth.audit import AuditLog


def read_all(log: AuditLog, page_size: int) -> list[int]:
    got: list[int] = []
    token: int | None = None
    while True:
        page, token = log.page(token, page_size)
        got += [r["n"] for r in page]
        if token is None:
            return got


@pytest.mark.parametrize("block_bytes", [16, 37, 64 * 1024])
@pytest.mark.parametrize("page_size", [1, 7, 100, 500])
def test_pages_walk_the_log_newest_first_without_gaps_or_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int, page_size: int
) -> None:
    monkeypatch.setattr(audit, "READ_BLOCK_BYTES", block_bytes)
    log = AuditLog(tmp_path / "audit.jsonl")
    for n in range(120):
        log.write(n=n, action="outcrop:Test", pad="x" * (n % 50))
    assert read_all(log, page_size) == list(range(119, -1, -1))


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.write(n=0)
    with open(log.path, "a", encoding="utf-8") as fh:
        fh.write('{"torn": \n[1, 2]\n\n')
    log.write(n=1)
    assert read_all(log, 10) == [1, 0]


def test_a_log_not_written_yet_is_an_empty_page(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "audit.jsonl").page(None, 10) == ([], None)
