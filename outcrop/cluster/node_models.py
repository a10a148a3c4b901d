"""A verified model folder on the node that runs a copy.

On one machine, or when every node mounts the model store at the same path, the folder the
gateway materialised is already there and is used as it is. A node that cannot see it
fetches the model's blobs from the store into a node-local cache, checking each blob's size
and sha256 as it copies, and writes the same ``.outcrop-manifest.json`` the worker checks
again before it loads the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from outcrop.engine.loader import MANIFEST_NAME
from outcrop.errors import ModelValidationError

COPY_CHUNK_BYTES = 8 * 1024 * 1024

# (relative path, sha256, size in bytes): one file of the model, as the store records it.
FileEntry = tuple[str, str, int]


def manifest_body(model_id: str, files: Sequence[FileEntry]) -> dict[str, object]:
    return {
        "model_id": model_id,
        "files": {path: {"sha256": sha, "size": size} for path, sha, size in sorted(files)},
    }


def folder_matches(folder: Path, model_id: str, files: Sequence[FileEntry]) -> bool:
    """The folder's manifest lists exactly these files and each file has its recorded size."""
    try:
        if json.loads((folder / MANIFEST_NAME).read_text()) != manifest_body(model_id, files):
            return False
        return all((folder / path).stat().st_size == size for path, _, size in files)
    except (OSError, ValueError):
        return False


def ensure_model_folder(
    model_dir: str, model_id: str, files: Sequence[FileEntry], store_root: str | None, cache_dir: Path
) -> Path:
    """``model_dir`` if this node sees it intact; else a verified copy under ``cache_dir`` built from the store."""
    shared = Path(model_dir)
    if folder_matches(shared, model_id, files):
        return shared
    target = cache_dir / "models" / model_id
    if folder_matches(target, model_id, files):
        return target
    if store_root is None or not (Path(store_root) / "blobs").is_dir():
        raise ModelValidationError(
            [
                f"This node sees neither the model folder {model_dir} nor the model store {store_root}; "
                "mount the store at the same path on every Ray node (or a shared file system), "
                "or set registry.model_store_url to a path all nodes share."
            ]
        )
    tmp = cache_dir / "models" / f".{model_id}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        problems: list[str] = []
        for path, sha, size in files:
            blob = Path(store_root) / "blobs" / "sha256" / sha[:2] / sha
            dest = tmp / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                got_sha, got_size = _copy_hashing(blob, dest)
            except OSError as exc:
                problems.append(f"{path}: cannot read its blob {sha[:12]}... from the store ({exc}).")
                continue
            if got_size != size or got_sha != sha:
                problems.append(
                    f"{path}: the store's blob has {got_size} bytes and sha256 {got_sha[:12]}..., expected "
                    f"{size} bytes and {sha[:12]}... (corrupted)."
                )
        if problems:
            problems.append("Delete the model and import it again to repair the store.")
            raise ModelValidationError(problems)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest_body(model_id, files), indent=2))
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not folder_matches(target, model_id, files):  # another copy on this node built it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _copy_hashing(source: Path, dest: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
