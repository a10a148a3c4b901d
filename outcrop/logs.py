"""Logging set-up: human-readable lines by default, one JSON object per line with ``--log-json``.

Tracebacks name each exception's class and where it was raised, but never its message: an
exception raised while handling a request can quote the request (a prompt, a field's value), and
the server log must not hold what callers sent. The caller gets the message in its answer; the
log line carries the request id to match them up.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from types import TracebackType

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def format_exception_without_values(exc_info: ExcInfo) -> str:
    """The traceback (every chained exception too), each exception shown by its class alone."""
    _, exc, _ = exc_info
    parts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = "".join(traceback.format_tb(exc.__traceback__))
        parts.append(
            f"Traceback (most recent call last):\n{frames}{type(exc).__module__}.{type(exc).__qualname__} "
            "(message withheld from the log: it may quote request data)"
        )
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "\n\nDuring handling of the above, caused by or after:\n".join(reversed(parts))


class _NoValues:
    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        return format_exception_without_values(ei)


class NoValuesFormatter(_NoValues, logging.Formatter):
    """A plain ``logging.Formatter`` whose tracebacks hold no exception messages."""


class JsonFormatter(_NoValues, logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class KeyValueFormatter(_NoValues, logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        )
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else KeyValueFormatter())
    root = logging.getLogger("outcrop")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
