"""Launchers start model copies; they are strategies registered by name (``serving.launcher``).

``local``
    Outcrop's own worker (``python -m outcrop.engine.worker``) as a subprocess on a free
    loopback port, loading the model folder the registry materialises.

``command``
    Any OpenAI-compatible server, from ``serving.command_template`` with the placeholders
    ``{model_dir}``, ``{port}``, ``{host}``, ``{served_name}`` and ``{api_key}`` (the copy's
    token, below); it is ready when ``serving.command_health_path`` answers 200. Leading
    ``NAME=value`` words set environment variables of the copy, as in a shell line. The template is split like a shell line
    (``shlex``) and then each word is filled in, so paths with spaces are safe; no shell runs.
    A first word of ``python`` or ``python3`` means the gateway's own interpreter; give a full
    path to run another one (e.g. a vLLM virtual environment's ``bin/python``).

    vLLM (GPU fleets)::

        OUTCROP_SERVING__LAUNCHER=command
        OUTCROP_SERVING__COMMAND_TEMPLATE='VLLM_API_KEY={api_key} vllm serve {model_dir} --host {host} --port {port} --served-model-name {served_name} --max-num-seqs 16'
        OUTCROP_SERVING__COMMAND_HEALTH_PATH=/health

    SGLang (``--api-key`` only: the token shows in the copy's command line to local users)::

        OUTCROP_SERVING__LAUNCHER=command
        OUTCROP_SERVING__COMMAND_TEMPLATE='python -m sglang.launch_server --model-path {model_dir} --host {host} --port {port} --served-model-name {served_name} --api-key {api_key}'
        OUTCROP_SERVING__COMMAND_HEALTH_PATH=/health

    ``transformers serve`` (CPU or GPU; it has no served-name option and answers only to the
    folder it loaded, so requests name that: the router rewrites each request's ``model`` and
    each answer's back)::

        OUTCROP_SERVING__LAUNCHER=command
        OUTCROP_SERVING__COMMAND_TEMPLATE='transformers serve {model_dir} --host {host} --port {port}'
        OUTCROP_SERVING__COMMAND_REQUEST_MODEL='{model_dir}'

    Outcrop's worker through a template (what the tests do, with ``transformers serve`` too)::

        OUTCROP_SERVING__COMMAND_TEMPLATE='python -m outcrop.engine.worker --model-dir {model_dir} --port {port} --host {host} --served-name {served_name}'

**Every copy requires a secret only its gateways hold.** Each launch gets a fresh token
(``secrets.token_urlsafe``); the gateway's copy client sends ``Authorization: Bearer <token>``
on every call, and the copy answers nothing but ``/health`` without it, so a copy's port is no
way around the gateway's policies, throttling, audit and invocation log. The token reaches the
copy in its environment (``OUTCROP_COPY_TOKEN``, which Outcrop's worker and the null copy
read), never on its command line; a template passes it on with ``{api_key}``. A template that
does neither (and runs no ``-m outcrop...`` module) starts copies that answer anyone who
reaches their port: the launcher logs a warning saying so.

``ray``
    Each copy in a Ray actor on whichever node of a Ray cluster has the CPUs, GPUs and memory
    it reserves; the actor runs the command that ``ray.copy_launcher`` (``local`` or
    ``command``) builds, on the node's IP. See :mod:`outcrop.cluster.ray_launcher`.

Each copy runs in its own process group (``start_new_session``), so stopping a copy also
stops the processes a server forks (vLLM's engine core, SGLang's schedulers). The ``local``
and ``command`` launchers' copies die with their gateway, even one killed with ``kill -9``
(``PR_SET_PDEATHSIG``, :mod:`outcrop.cluster.processes`), and a gateway that starts stops
what one killed on the same data dir left (:mod:`outcrop.cluster.pidfiles`).

What a launcher hands back is a :class:`LaunchedCopy`: the narrow seam through which the
fleet watches and stops a copy, whether it is a subprocess here (:class:`SubprocessCopy`)
or a process in a Ray actor on another node.
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from outcrop.cluster.node_models import FileEntry
from outcrop.cluster.pidfiles import stop_leftovers, write_record
from outcrop.cluster.processes import read_log_tail, signal_process_group, start_copy_process
from outcrop.config import OutcropConfig, ServingConfig
from outcrop.envs import COPY_TOKEN_ENV
from outcrop.errors import ConfigError

log = logging.getLogger("outcrop.cluster")

PLACEHOLDERS = ("model_dir", "port", "host", "served_name", "api_key")
# A leading template word that sets an environment variable of the copy, as in a shell line.
ENV_WORD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
# Why 32 bytes: 256 bits of secrets.token_urlsafe, what Python's docs suggest for secrets.
COPY_TOKEN_BYTES = 32
# What a copy asked to stop exits with: 0, or killed by the SIGTERM itself (uvicorn re-raises the
# signal after draining, so Outcrop's worker and most Python servers end that way).
STOPPED_EXIT_CODES = frozenset({0, -int(signal.SIGTERM)})


@dataclass(frozen=True)
class LaunchRequest:
    copy_id: str
    model_id: str
    served_name: str
    model_dir: Path
    host: str  # what the copy binds (a launcher that places copies elsewhere picks its own)
    port: int  # a port free here (likewise)
    log_path: Path
    memory_estimate_bytes: int = 0
    model_files: tuple[
        FileEntry, ...
    ] = ()  # (path, sha256, size) model_dir must hold, for a node that fetches it
    store_root: str | None = None  # the model store the blobs come from
    kind: str = "text"  # the imported model's kind: "text" or "embedding" (which worker serves it)
    # The secret the copy requires of its callers (generated per launch; never logged).
    token: str = field(default_factory=lambda: secrets.token_urlsafe(COPY_TOKEN_BYTES), repr=False)


class LaunchedCopy(Protocol):
    """A started copy: where to reach it, and how to watch and stop it (the fleet's only view)."""

    host: str  # where the router connects
    port: int
    url: str
    health_path: str
    log_path: Path
    # False: another gateway started it and stops it; this one only routes to it (and health-checks it).
    owned: bool
    # The 'model' requests must name for this copy, when it is not the served name (see
    # serving.command_request_model); None: the served name.
    request_model: str | None
    # The secret the gateway sends in 'Authorization: Bearer' on every call to the copy.
    token: str

    @property
    def pid(self) -> int | None: ...

    def exit_code(self) -> int | None:
        """None while the copy runs; its exit code once it ended (negative: a signal, or its node died)."""

    def terminate(self) -> None:
        """Ask the copy to drain and exit (SIGTERM)."""

    def kill(self) -> None:
        """End the copy now (SIGKILL)."""

    def release(self) -> None:
        """Free what held the copy's place once it ended (a Ray actor); the copy must be gone first."""

    def log_tail(self, max_chars: int = 600) -> str:
        """The end of the copy's output, for failure messages."""


@dataclass(frozen=True)
class FoundCopy:
    """A copy a launcher found running that this gateway does not know (another gateway's, or a crashed one's)."""

    copy_id: str
    model_id: str
    launched: LaunchedCopy
    started_at: float  # wall-clock seconds
    running: bool  # its process had not exited when it was found


@dataclass
class SubprocessCopy:
    """A copy process started on this machine."""

    process: subprocess.Popen[bytes]
    host: str  # where the router connects (a wildcard bind address becomes loopback)
    port: int
    url: str
    health_path: str
    log_path: Path
    command: tuple[str, ...]
    owned: bool = True
    request_model: str | None = None
    token: str = field(default="", repr=False)
    record_path: Path | None = None  # its record for the next gateway (outcrop.cluster.pidfiles)

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        if self.record_path is not None and self.process.poll() is not None:
            self.record_path.unlink(missing_ok=True)

    def exit_code(self) -> int | None:
        return self.process.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the copy's process group (the copy and what it forked)."""
        signal_process_group(self.process, sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def log_tail(self, max_chars: int = 600) -> str:
        return read_log_tail(self.log_path, max_chars)


class Launcher(Protocol):
    """Starts one copy process; the router health-checks and stops it."""

    name: ClassVar[str]
    # True: copies use this machine's memory, so the fleet checks they fit before starting one.
    # False: the launcher places copies on other nodes by their reserved resources itself.
    uses_local_memory: ClassVar[bool]
    # True: every gateway of the store sees the copies (a Ray namespace), so one gateway at a time
    # scales them (a lease in the store) and the others adopt what they find and route to it.
    shares_copies: ClassVar[bool]

    def command(self, request: LaunchRequest) -> list[str]: ...

    def copy_env(self, request: LaunchRequest) -> dict[str, str]:
        """Environment variables the copy gets on top of the gateway's (its token among them)."""
        ...

    def health_path(self) -> str: ...

    def launch(self, request: LaunchRequest) -> LaunchedCopy: ...

    def request_model(self, request: LaunchRequest) -> str | None:
        """The 'model' requests name to a copy started for ``request``; None: its served name."""

    def discover(self, known: set[str]) -> list[FoundCopy]:
        """Running copies whose ids are not in ``known`` (a launcher without shared copies: none)."""
        ...

    def close(self) -> None: ...


_LAUNCHERS: dict[str, Callable[[OutcropConfig], Launcher]] = {}
_PROCESS_LAUNCHERS: dict[str, type[_ProcessLauncher]] = {}


def register_launcher(name: str) -> Callable[[type[_ProcessLauncher]], type[_ProcessLauncher]]:
    def add(cls: type[_ProcessLauncher]) -> type[_ProcessLauncher]:
        cls.name = name
        _PROCESS_LAUNCHERS[name] = cls
        _LAUNCHERS[name] = lambda config: cls(config.serving, run_dir=copy_records_dir(config))
        return cls

    return add


def _ray_launcher(config: OutcropConfig) -> Launcher:
    try:
        from outcrop.cluster.ray_launcher import RayLauncher  # imports ray: only when it is used
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise ConfigError(
            "serving.launcher is 'ray' but Ray is not installed here; install it with "
            "`pip install -c scripts/constraints.txt '.[ray]'` from Outcrop's checkout (on the gateways and on "
            "every node of the cluster)."
        ) from None
    return RayLauncher(config)


_LAUNCHERS["ray"] = _ray_launcher


def copy_records_dir(config: OutcropConfig) -> Path:
    """Where the process launchers record the copies they start (``outcrop.cluster.pidfiles``)."""
    return config.resolved_data_dir / "run" / "copies"


def launcher_names() -> list[str]:
    return sorted(_LAUNCHERS)


def get_launcher(config: OutcropConfig) -> Launcher:
    """The launcher ``serving.launcher`` names; ConfigError listing the valid names otherwise."""
    factory = _LAUNCHERS.get(config.serving.launcher)
    if factory is None:
        raise ConfigError(
            f"serving.launcher is '{config.serving.launcher}', which is not a launcher; "
            f"valid: {', '.join(launcher_names())} (set OUTCROP_SERVING__LAUNCHER)."
        )
    return factory(config)


def process_launcher(name: str, config: ServingConfig) -> Launcher:
    """The ``local`` or ``command`` launcher, e.g. to build the command a Ray actor runs."""
    if name not in ("local", "command"):
        raise ConfigError(
            f"ray.copy_launcher is '{name}'; valid: command, local (set OUTCROP_RAY__COPY_LAUNCHER)."
        )
    return _PROCESS_LAUNCHERS[name](config)  # no records: it only builds commands for nodes


def free_port(host: str) -> int:
    """A TCP port that was free a moment ago (the copy binds it right after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class _ProcessLauncher:
    name: ClassVar[str] = ""
    uses_local_memory: ClassVar[bool] = True
    shares_copies: ClassVar[bool] = False

    def __init__(self, config: ServingConfig, *, run_dir: Path | None = None) -> None:
        """``run_dir``: where copies are recorded; a gateway's launcher first stops the leftovers there."""
        self.config = config
        self.run_dir = run_dir
        if run_dir is not None:
            stop_leftovers(run_dir)

    def discover(self, known: set[str]) -> list[FoundCopy]:
        return []  # a subprocess dies with its gateway (PR_SET_PDEATHSIG; a restarted one sweeps the rest)

    def copy_env(self, request: LaunchRequest) -> dict[str, str]:
        return {COPY_TOKEN_ENV: request.token}

    def close(self) -> None:
        return None

    def command(self, request: LaunchRequest) -> list[str]:
        raise NotImplementedError

    def health_path(self) -> str:
        return "/health"

    def request_model(self, request: LaunchRequest) -> str | None:
        return None

    def launch(self, request: LaunchRequest) -> SubprocessCopy:
        cmd = self.command(request)
        try:
            process = start_copy_process(
                cmd, request.log_path, die_with_parent=True, env=self.copy_env(request)
            )
        except OSError as exc:
            raise ConfigError(
                f"Cannot start a copy with the {self.name} launcher: '{cmd[0]}' failed to run ({exc}). "
                "Check serving.command_template (OUTCROP_SERVING__COMMAND_TEMPLATE)."
            ) from None
        return SubprocessCopy(
            process=process,
            host=url_host(request.host).strip("[]"),
            port=request.port,
            url=f"http://{url_host(request.host)}:{request.port}",
            health_path=self.health_path(),
            log_path=request.log_path,
            command=tuple(cmd),
            request_model=self.request_model(request),
            token=request.token,
            record_path=write_record(self.run_dir, request.copy_id, process.pid, cmd[0])
            if self.run_dir
            else None,
        )


@register_launcher("local")
class LocalLauncher(_ProcessLauncher):
    """Outcrop's worker, ``python -m outcrop.engine.worker``, with this interpreter."""

    def command(self, request: LaunchRequest) -> list[str]:
        cfg = self.config
        # An embedding model's copy is outcrop.engine.embedding_worker: the same contract and options,
        # but no KV cache, and the text worker's extra arguments do not apply to it.
        embedding = request.kind == "embedding"
        cmd = [
            sys.executable,
            "-m",
            "outcrop.engine.embedding_worker" if embedding else "outcrop.engine.worker",
            "--model-dir",
            str(request.model_dir),
            "--port",
            str(request.port),
            "--host",
            request.host,
            "--served-name",
            request.served_name,
            "--device",
            cfg.worker_device,
        ]
        if cfg.worker_max_batch is not None:
            cmd += ["--max-batch", str(cfg.worker_max_batch)]
        if cfg.worker_kv_cache_bytes is not None and not embedding:
            cmd += ["--kv-cache-bytes", str(cfg.worker_kv_cache_bytes)]
        if cfg.worker_threads is not None:
            cmd += ["--threads", str(cfg.worker_threads)]
        return cmd if embedding else cmd + list(cfg.worker_extra_args)


@register_launcher("command")
class CommandLauncher(_ProcessLauncher):
    """Any OpenAI-compatible server from ``serving.command_template`` (see the module docstring)."""

    def __init__(self, config: ServingConfig, *, run_dir: Path | None = None) -> None:
        super().__init__(config, run_dir=run_dir)
        template = config.command_template
        if not template or not template.strip():
            raise ConfigError(
                "serving.launcher is 'command' but serving.command_template is empty; set "
                "OUTCROP_SERVING__COMMAND_TEMPLATE, e.g. 'vllm serve {model_dir} --port {port} "
                "--served-model-name {served_name}'."
            )
        try:
            words = shlex.split(template)
        except ValueError as exc:
            raise ConfigError(f"serving.command_template cannot be split into words: {exc}.") from None
        # Leading NAME=value words: the copy's environment, as in a shell line (kept off its command line).
        self.env_words: list[tuple[str, str]] = []
        while words and (match := ENV_WORD.match(words[0])):
            self.env_words.append((match[1], match[2]))
            words.pop(0)
        self.words = words
        if not words:
            raise ConfigError(
                f"serving.command_template '{template}' sets only environment variables; add the command, "
                "e.g. 'vllm serve {model_dir} --port {port}'."
            )
        sample = dict.fromkeys(PLACEHOLDERS, "x")
        for word in self.words + [value for _, value in self.env_words]:
            try:
                word.format(**sample)
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"serving.command_template word '{word}' has an unknown or malformed placeholder ({exc}); "
                    f"valid: {', '.join('{' + p + '}' for p in PLACEHOLDERS)} (double braces for a literal brace)."
                ) from None
        if not any("{port}" in w for w in self.words):
            raise ConfigError(
                "serving.command_template has no {port} placeholder, so copies cannot be given distinct "
                "ports; add '--port {port}' (or the server's own flag)."
            )
        if not self.passes_token():
            log.warning(
                "serving.command_template does not pass the copy's token ({api_key}): its copies answer "
                "anyone who can reach their port, bypassing the gateway's policies, throttling and logs. "
                "Add 'VLLM_API_KEY={api_key}' before a vLLM command, or the server's own key option "
                "(e.g. '--api-key {api_key}').",
                extra={"template": template},
            )

    def passes_token(self) -> bool:
        """Whether copies from this template check their token: it passes ``{api_key}``, or runs an
        Outcrop module (``-m outcrop...``: Outcrop's worker or the null copy), which reads it itself."""
        if any("{api_key}" in w for w in self.words + [v for _, v in self.env_words]):
            return True
        return any(
            w == "-m" and nxt.startswith("outcrop.")
            for w, nxt in zip(self.words, self.words[1:], strict=False)
        )

    def health_path(self) -> str:
        return self.config.command_health_path

    def request_model(self, request: LaunchRequest) -> str | None:
        if self.config.command_request_model == "{model_dir}":
            return str(request.model_dir)
        return None

    def _values(self, request: LaunchRequest) -> dict[str, str]:
        return {
            "model_dir": str(request.model_dir),
            "port": str(request.port),
            "host": request.host,
            "served_name": request.served_name,
            "api_key": request.token,
        }

    def command(self, request: LaunchRequest) -> list[str]:
        values = self._values(request)
        words = [w.format(**values) for w in self.words]
        if words and words[0] in ("python", "python3"):
            words[0] = sys.executable  # the gateway's interpreter, so its packages are importable
        return words

    def copy_env(self, request: LaunchRequest) -> dict[str, str]:
        values = self._values(request)
        return {**super().copy_env(request), **{name: v.format(**values) for name, v in self.env_words}}
