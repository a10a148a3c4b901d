"""Python handler modules (SageMaker's ``input_fn`` / ``output_fn``), for what templates cannot say.

A model opts in with ``OUTCROP_HANDLER=<module>`` in its container Environment; the module is
``<sagemaker.handlers_dir>/<module>.py``, a folder only the operator writes (never a model folder,
never a request). Each module runs in its own worker process (``handler_worker``) with an
address-space limit, and each call has a timeout: a handler that raises, loops or exhausts memory
fails its own requests with a ModelError, and the gateway and other endpoints keep answering.

    def input_fn(payload, content_type):   # -> the body to invoke with (TGI or Messages API)
    def output_fn(response, accept):       # -> the response body (str is sent as is; else JSON)

Either may be absent (the value passes through). Calls to one module are serialised on its worker.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

from outcrop.config import SageMakerConfig
from outcrop.errors import InvalidRequestError, ModelFailedError
from outcrop.sagemaker.templates import HANDLER_ENV

MODULE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# A worker's answer may be as large as a request body (25 MB) plus JSON escaping.
PIPE_LIMIT_BYTES = 64 * 1024 * 1024
# How much of a dead worker's log goes into the error message.
LOG_TAIL_CHARS = 400


def check_handler(settings: SageMakerConfig, module: str) -> Path:
    """The file of handler ``module``, or InvalidRequestError saying why it cannot be used."""
    if settings.handlers_dir is None:
        raise InvalidRequestError(
            f"{HANDLER_ENV}={module!r}: handler modules are off on this server; the operator enables them by "
            "setting sagemaker.handlers_dir (OUTCROP_SAGEMAKER__HANDLERS_DIR). Templates need no setup.",
            param=f"Environment.{HANDLER_ENV}",
        )
    if not MODULE_NAME_RE.fullmatch(module):
        raise InvalidRequestError(
            f"{HANDLER_ENV}={module!r} is not a module name (letters, digits and '_', e.g. 'qa_format').",
            param=f"Environment.{HANDLER_ENV}",
        )
    path = settings.handlers_dir.expanduser() / f"{module}.py"
    if not path.is_file():
        available = sorted(p.stem for p in settings.handlers_dir.expanduser().glob("*.py"))
        raise InvalidRequestError(
            f"{HANDLER_ENV}={module!r}: there is no {module}.py in the handler folder; it has: "
            f"{', '.join(available) or 'nothing'}.",
            param=f"Environment.{HANDLER_ENV}",
        )
    return path


class HandlerWorker:
    """One module's worker process, started on first use and again after it dies or is stopped."""

    def __init__(self, settings: SageMakerConfig, module: str, log_path: Path) -> None:
        self.settings = settings
        self.module = module
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> asyncio.subprocess.Process:
        assert self.settings.handlers_dir is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "outcrop.sagemaker.handler_worker",
                "--folder",
                str(self.settings.handlers_dir.expanduser()),
                "--module",
                self.module,
                "--memory-bytes",
                str(self.settings.handler_memory_bytes),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=PIPE_LIMIT_BYTES,
            )

    def _failed(self, fn: str, why: str) -> ModelFailedError:
        return ModelFailedError(
            f"Handler '{self.module}'.{fn} {why}", original_status_code=500, model_id=f"handler:{self.module}"
        )

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip()
        except OSError:
            return ""

    async def call(self, fn: str, *args: Any) -> Any:
        async with self._lock:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                proc = self._proc = await self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"fn": fn, "args": list(args)}).encode() + b"\n")
                await proc.stdin.drain()
                line = await asyncio.wait_for(proc.stdout.readline(), self.settings.handler_timeout_seconds)
            except TimeoutError:
                await self.stop()
                raise self._failed(
                    fn,
                    f"did not return within {self.settings.handler_timeout_seconds:g} s and was stopped "
                    "(sagemaker.handler_timeout_seconds); a fresh worker takes the next request.",
                ) from None
            except (BrokenPipeError, ConnectionResetError):
                line = b""
            if not line:
                code = await proc.wait()
                self._proc = None
                raise self._failed(fn, f"ended its worker (exit code {code}). Worker log: {self._log_tail()}")
            answer = json.loads(line)
            if "error" in answer:
                if proc.returncode is None and answer["error"].startswith("MemoryError"):
                    await proc.wait()
                raise self._failed(fn, f"raised {answer['error']}")
            return answer["ok"]

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()


class HandlerPool:
    """The workers of every handler module in use, by module name."""

    def __init__(self, settings: SageMakerConfig, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self._workers: dict[str, HandlerWorker] = {}

    async def call(self, module: str, fn: str, *args: Any) -> Any:
        worker = self._workers.get(module)
        if worker is None:
            check_handler(self.settings, module)
            worker = self._workers[module] = HandlerWorker(
                self.settings, module, self.log_dir / f"{module}.log"
            )
        return await worker.call(fn, *args)

    async def stop(self) -> None:
        for worker in list(self._workers.values()):
            await worker.stop()
