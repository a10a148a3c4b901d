"""The server log never holds what a caller sent: tracebacks name exception classes, not messages."""

from __future__ import annotations

import json
import logging

import pytest

from outcrop.logs import JsonFormatter, KeyValueFormatter, NoValuesFormatter


@pytest.mark.parametrize("formatter", [KeyValueFormatter(), JsonFormatter(), NoValuesFormatter()])
def test_tracebacks_keep_the_classes_and_frames_but_not_the_messages(formatter: logging.Formatter) -> None:
    secret = "my " + "secret prompt"  # built here, so the traceback's source lines do not show it
    try:
        try:
            int(secret)
        except ValueError as exc:
            raise RuntimeError(f"echo: {secret}") from exc
    except RuntimeError:
        record = logging.getLogger("outcrop.test").makeRecord(
            "outcrop.test", logging.ERROR, __file__, 1, "unhandled error", None, __import__("sys").exc_info()
        )
    text = formatter.format(record)
    if isinstance(formatter, JsonFormatter):
        text = json.loads(text)["exc"]
    assert "secret prompt" not in text
    assert "builtins.ValueError" in text and "builtins.RuntimeError" in text
    assert "test_logs.py" in text  # where it happened is still there
