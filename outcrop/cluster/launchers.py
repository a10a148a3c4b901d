"""Launchers start model copies; they are strategies registered by name (``serving.launcher``).

``local``
    Outcrop's own worker (``python -m outcrop.engine.worker``) as a subprocess on a free
    loopback port, loading the model folder the registry materialises.

``command``
    Any OpenAI-compatible server, from ``serving.command_template`` with the placeholders
    ``{model_dir}``, ``{port}``, ``{host}`` and ``{served_name}``; it is ready when
    ``serving.command_health_path`` answers 200. The template is split like a shell line
    (``shlex``) and then each word is filled in, so paths with spaces are safe; no shell runs.
    A first word of ``python`` or ``python3`` means the gateway's own interpreter; give a full
    path to run another one (e.g. a vLLM virtual environment's ``bin/python``).

    vLLM (GPU fleets)::

        OUTCROP_SERVING__LAUNCHER=command
        OUTCROP_SERVING__COMMAND_TEMPLATE='vllm serve {model_dir} --host {host} --port {port} --served-model-name {served_name} --max-num-seqs 16'
        OUTCROP_SERVING__COMMAND_HEALTH_PATH=/health

    SGLang::

        OUTCROP_SERVING__LAUNCHER=command
        OUTCROP_SERVING__COMMAND_TEMPLATE='python -m sglang.launch_server --model-path {model_dir} --host {host} --port {port} --served-model-name {served_name}'
        OUTCROP_SERVING__COMMAND_HEALTH_PATH=/health

    ``transformers serve`` (CPU or GPU; it has no served-name option and answers only to the
    folder it loaded, so requests name that: the router rewrites each request's ``model`` and
    each answer's back)::

        OUTCROP_SERVING__LAUNCHER=command
        OUTCROP_SERVING__COMMAND_TEMPLATE='transformers serve {model_dir} --host {host} --port {port}'
        OUTCROP_SERVING__COMMAND_REQUEST_MODEL='{model_dir}'

    Outcrop's worker through a template (what the tests do, with ``transformers serve`` too)::

        OUTCROP_SERVING__COMMAND_TEMPLATE='python -m outcrop.engine.worker --model-dir {model_dir} --port {port} --host {host} --served-name {served_name}'

``ray``
    Each copy in a Ray actor on whichever node of a Ray cluster has the CPUs, GPUs and memory
    it reserves; the actor runs the command that ``ray.copy_launcher`` (``local`` or
    ``command``) builds, on the node's IP. See :mod:`outcrop.cluster.ray_launcher`.

Each copy runs in its own process group (``start_new_session``), so stopping a copy also
stops the processes a server forks (vLLM's engine core, SGLang's schedulers).

What a launcher hands back is a :class:`LaunchedCopy`: the narrow seam through which the
fleet watches and stops a copy, whether it is a subprocess here (:class:`SubprocessCopy`)
or a process in a Ray actor on another node.
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from outcrop.cluster.node_models import FileEntry
from outcrop.cluster.processes import read_log_tail, signal_process_group, start_copy_process
from outcrop.config import OutcropConfig, ServingConfig
from outcrop.errors import ConfigError

PLACEHOLDERS = ("model_dir", "port", "host", "served_name")
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

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        return None

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

    def health_path(self) -> str: ...

    def launch(self, request: LaunchRequest) -> LaunchedCopy: ...

    def request_model(self, request: LaunchRequest) -> str | None:
        """The 'model' requests name to a copy started for ``request``; None: its served name."""

    def discover(self, known: set[str]) -> list[FoundCopy]:
        """Running copies whose ids are not in ``known`` (a launcher without shared copies: none)."""
        ...

    def close(self) -> None: ...


_LAUNCHERS: dict[str, Callable[[OutcropConfig], Launcher]] = {}


def register_launcher(name: str) -> Callable[[type[_ProcessLauncher]], type[_ProcessLauncher]]:
    def add(cls: type[_ProcessLauncher]) -> type[_ProcessLauncher]:
        cls.name = name
        _LAUNCHERS[name] = lambda config: cls(config.serving)
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
    return _LAUNCHERS[name](OutcropConfig(serving=config))


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

    def __init__(self, config: ServingConfig) -> None:
        self.config = config

    def discover(self, known: set[str]) -> list[FoundCopy]:
        return []  # a subprocess dies with its gateway (its own session, but the gateway stops it)

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
            process = start_copy_process(cmd, request.log_path)
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
        )


@register_launcher("local")
class LocalLauncher(_ProcessLauncher):
    """Outcrop's worker, ``python -m outcrop.engine.worker``, with this interpreter."""

    def command(self, request: LaunchRequest) -> list[str]:
        cfg = self.config
        cmd = [
            sys.executable,
            "-m",
            "outcrop.engine.worker",
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
        if cfg.worker_kv_cache_bytes is not None:
            cmd += ["--kv-cache-bytes", str(cfg.worker_kv_cache_bytes)]
        if cfg.worker_threads is not None:
            cmd += ["--threads", str(cfg.worker_threads)]
        return cmd + list(cfg.worker_extra_args)


@register_launcher("command")
class CommandLauncher(_ProcessLauncher):
    """Any OpenAI-compatible server from ``serving.command_template`` (see the module docstring)."""

    def __init__(self, config: ServingConfig) -> None:
        super().__init__(config)
        template = config.command_template
        if not template or not template.strip():
            raise ConfigError(
                "serving.launcher is 'command' but serving.command_template is empty; set "
                "OUTCROP_SERVING__COMMAND_TEMPLATE, e.g. 'vllm serve {model_dir} --port {port} "
                "--served-model-name {served_name}'."
            )
        try:
            self.words = shlex.split(template)
        except ValueError as exc:
            raise ConfigError(f"serving.command_template cannot be split into words: {exc}.") from None
        sample = dict.fromkeys(PLACEHOLDERS, "x")
        for word in self.words:
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

    def health_path(self) -> str:
        return self.config.command_health_path

    def request_model(self, request: LaunchRequest) -> str | None:
        if self.config.command_request_model == "{model_dir}":
            return str(request.model_dir)
        return None

    def command(self, request: LaunchRequest) -> list[str]:
        values = {
            "model_dir": str(request.model_dir),
            "port": str(request.port),
            "host": request.host,
            "served_name": request.served_name,
        }
        words = [w.format(**values) for w in self.words]
        if words and words[0] in ("python", "python3"):
            words[0] = sys.executable  # the gateway's interpreter, so its packages are importable
        return words
