"""The Ray actor that runs one copy on its node.

The gateway creates it (reserving the copy's CPUs, GPUs and memory), asks it for the node's
address and a free port, has it prepare a verified model folder on the node, then start the
copy's command there. The copy process dies with its actor: it runs in its own process
group and gets SIGKILL when the actor's process ends (``PR_SET_PDEATHSIG``), so a killed
actor or a lost node leaks no server. This module runs on the nodes; it imports Ray lazily
and nothing of Outcrop but ``envs``, ``errors``, :mod:`outcrop.cluster.node_models` and
:mod:`outcrop.cluster.processes`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from outcrop.cluster.node_models import FileEntry, ensure_model_folder
from outcrop.cluster.processes import read_log_tail, signal_process_group, start_copy_process

# Why 0.1 s: how soon the actor's exit watch sees its copy exit; a gateway's own health check
# runs every couple of seconds, so this is never the slow part.
EXIT_POLL_SECONDS = 0.1


class CopyActor:
    """One copy on one node (used as ``ray.remote(CopyActor)``: an async actor)."""

    def __init__(self, copy_id: str, model_id: str, model_name: str, owner: str) -> None:
        self.copy_id = copy_id
        self.model_id = model_id
        self.model_name = model_name
        self.owner = owner  # the gateway that started it (for logs and `outcrop copies`)
        self.started_at = time.time()
        self.process: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.port = 0
        self.url = ""
        self.health_path = "/health"
        self.request_model: str | None = None
        self.log_path: Path | None = None
        self.token = ""  # the secret the copy requires; adopting gateways read it from describe()

    async def address(self, bind_host: str | None) -> tuple[str, int, str]:
        """(node IP, a port free on the node, node id): where the copy will listen."""
        import ray

        node_ip = ray.util.get_node_ip_address()
        host = bind_host or node_ip
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        self.host, self.port = (node_ip if host in ("0.0.0.0", "::") else host), port
        return self.host, port, ray.get_runtime_context().get_node_id()

    async def prepare_model(
        self, model_dir: str, files: list[FileEntry], store_root: str | None, cache_dir: str | None
    ) -> str:
        """A verified model folder on this node (fetched from the store when the node lacks it)."""
        cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "outcrop-node-cache"
        folder = await asyncio.to_thread(
            ensure_model_folder, model_dir, self.model_id, files, store_root, cache
        )
        return str(folder)

    async def start(
        self,
        argv: list[str],
        log_path: str,
        url: str,
        health_path: str,
        request_model: str | None = None,
        env: dict[str, str] | None = None,
        token: str = "",
    ) -> int:
        """Start the copy's process with ``env`` (its token among them) added to the node's; its pid."""
        self.request_model = request_model
        self.token = token
        if argv and not os.path.exists(argv[0]) and Path(argv[0]).name.startswith("python"):
            argv = [sys.executable, *argv[1:]]  # the gateway's interpreter path does not exist here
        self.log_path = Path(log_path)
        self.url, self.health_path = url, health_path
        self.process = start_copy_process(argv, self.log_path, die_with_parent=True, env=env)
        return self.process.pid

    async def wait_exit(self) -> int:
        """Returns the copy's exit code when its process ends (the gateway keeps one call pending)."""
        while self.process is None or self.process.poll() is None:
            await asyncio.sleep(EXIT_POLL_SECONDS)
        return int(self.process.returncode)

    async def shutdown(self) -> None:
        """End this actor once its copy has exited, after every gateway's exit watch has seen the code."""
        import ray

        await asyncio.sleep(EXIT_POLL_SECONDS * 3)
        ray.actor.exit_actor()

    async def signal(self, sig: int) -> None:
        """Send ``sig`` to the copy's process group."""
        if self.process is not None:
            signal_process_group(self.process, sig)

    async def describe(self) -> dict[str, Any]:
        """What a gateway needs to adopt this copy (and where it runs), its token included."""
        import ray

        process = self.process
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "copy_id": self.copy_id,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "owner": self.owner,
            "started_at": self.started_at,
            "host": self.host,
            "port": self.port,
            "url": self.url,
            "health_path": self.health_path,
            "request_model": self.request_model,
            "token": self.token,
            "log_path": str(self.log_path) if self.log_path else "",
            "pid": process.pid if process else None,
            "exit_code": process.poll() if process else None,
        }

    async def log_tail(self, max_chars: int) -> str:
        return read_log_tail(self.log_path, max_chars) if self.log_path is not None else ""
