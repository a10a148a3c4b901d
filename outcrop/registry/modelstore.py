"""The content-addressed model store: blobs keyed by sha256 plus one manifest per model.

Layout under the store root::

    blobs/sha256/ab/abcdef...        read-only file contents, stored once however many models share them
    manifests/<model_id>.json        {"model_id", "name", "files": {"rel/path": {"sha256", "size"}}}
    models/<model_id>/...            materialised folders for copies: hard links to the blobs

A copy never reads a blob it has not verified: ``materialize`` checks sizes always and
sha256 when asked, and writes ``.outcrop-manifest.json`` that the worker checks again
before it loads the weights.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from outcrop.engine.loader import MANIFEST_NAME, sha256_file
from outcrop.errors import InternalError, ModelValidationError
from outcrop.store.imports import ModelFile


class ModelStore:
    """Blobs and manifests on the local filesystem."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self.blobs = self.root / "blobs" / "sha256"
        self.manifests = self.root / "manifests"
        self.materialized = self.root / "models"
        for folder in (self.blobs, self.manifests, self.materialized, self.staging_root):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def staging_root(self) -> Path:
        """Where imports stage files; on the store's filesystem so a blob is stored by a rename."""
        return self.root / "staging"

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).exists()

    def put(self, staged: Path, sha256: str) -> bool:
        """Move a staged file into the store under its sha256; returns False if it was already stored."""
        target = self.blob_path(sha256)
        if target.exists():
            staged.unlink(missing_ok=True)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(staged, 0o400)  # read-only (blobs are shared by hash), and private like the data dir
        os.replace(staged, target)
        return True

    def verify_blob(self, sha256: str) -> bool:
        path = self.blob_path(sha256)
        return path.exists() and sha256_file(path) == sha256

    def delete_blobs(self, shas: Iterable[str]) -> int:
        removed = 0
        for sha in shas:
            path = self.blob_path(sha)
            if path.exists():
                path.unlink()
                removed += 1
        return removed

    def write_manifest(self, model_id: str, name: str, files: Iterable[ModelFile]) -> Path:
        path = self.manifests / f"{model_id}.json"
        body = {"model_id": model_id, "name": name, "files": _files_dict(files)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path

    def remove_model(self, model_id: str, unreferenced_shas: Iterable[str]) -> None:
        """Drop a deleted model's manifest, its materialised folder and the blobs nobody else uses."""
        (self.manifests / f"{model_id}.json").unlink(missing_ok=True)
        shutil.rmtree(self.materialized / model_id, ignore_errors=True)
        self.delete_blobs(unreferenced_shas)

    def materialize(self, model_id: str, files: Iterable[ModelFile], *, verify_sha256: bool = False) -> Path:
        """A folder with the model's files under their original names (hard links to the blobs).

        Raises ModelValidationError naming every missing or corrupted blob.
        """
        files = list(files)
        problems = []
        for f in files:
            blob = self.blob_path(f.sha256)
            if not blob.exists():
                problems.append(
                    f"{f.path}: its stored blob {f.sha256[:12]}... is missing from the model store."
                )
            elif blob.stat().st_size != f.size_bytes:
                problems.append(
                    f"{f.path}: stored blob has {blob.stat().st_size} bytes, expected {f.size_bytes} (corrupted)."
                )
            elif verify_sha256 and sha256_file(blob) != f.sha256:
                problems.append(
                    f"{f.path}: stored blob does not match its sha256 {f.sha256[:12]}... (corrupted)."
                )
        if problems:
            problems.append("Delete the model and import it again to repair the store.")
            raise ModelValidationError(problems)
        folder = self.materialized / model_id
        manifest: dict[str, object] = {"model_id": model_id, "files": _files_dict(files)}
        if _same_manifest(folder, manifest):
            return folder  # built before (by this or another process): never rebuilt under a loading copy
        tmp = self.materialized / f".{model_id}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            for f in files:
                dest = tmp / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(self.blob_path(f.sha256), dest)
                except OSError:
                    shutil.copyfile(self.blob_path(f.sha256), dest)
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
            if folder.exists() and not _same_manifest(folder, manifest):
                shutil.rmtree(folder, ignore_errors=True)  # a stale folder from an older store layout
            try:
                os.rename(tmp, folder)
            except OSError:
                if not _same_manifest(
                    folder, manifest
                ):  # lost a race to a concurrent builder: fine if it matches
                    raise InternalError(f"Could not materialise model {model_id} into {folder}.") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder


def _same_manifest(folder: Path, manifest: dict[str, object]) -> bool:
    try:
        return bool(json.loads((folder / MANIFEST_NAME).read_text()) == manifest)
    except (OSError, ValueError):
        return False


def _files_dict(files: Iterable[ModelFile]) -> dict[str, dict[str, object]]:
    return {f.path: {"sha256": f.sha256, "size": f.size_bytes} for f in sorted(files, key=lambda f: f.path)}
