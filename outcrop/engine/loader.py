"""Checks a model folder before the worker loads it.

If the folder holds ``.outcrop-manifest.json`` (written by the model store:
``{"files": {"relative/path": {"sha256": "...", "size": N}}}``), every listed file must be
present with that size and sha256; otherwise the worker refuses to start. Pickle weights
are never loaded: the folder must contain ``*.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from outcrop.errors import ModelValidationError

# The one name of the manifest: the model store (outcrop/registry/modelstore.py) writes it, Ray
# nodes' copies of a model (outcrop/cluster/node_models.py) carry it, this module checks it.
MANIFEST_NAME = ".outcrop-manifest.json"


def sha256_file(path: Path) -> str:
    """The file's sha256 as hex (``hashlib.file_digest`` reads it in chunks)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify_model_dir(model_dir: Path) -> None:
    """Raise ``ModelValidationError`` listing every problem found."""
    problems: list[str] = []
    if not model_dir.is_dir():
        raise ModelValidationError([f"{model_dir} is not a folder; pass the model folder as --model-dir."])
    if not (model_dir / "config.json").is_file():
        problems.append(f"config.json is missing in {model_dir}; a Hugging Face model folder needs it.")
    if not any(model_dir.glob("*.safetensors")):
        problems.append(
            f"no *.safetensors file in {model_dir}; this worker loads safetensors weights only (never pickle)."
        )
    manifest = model_dir / MANIFEST_NAME
    if manifest.exists():
        problems.extend(_check_manifest(model_dir, manifest))
    if problems:
        raise ModelValidationError(problems)


def _check_manifest(model_dir: Path, manifest: Path) -> list[str]:
    try:
        files = json.loads(manifest.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{MANIFEST_NAME} is unreadable ({exc}); re-import the model to rewrite it."]
    problems = []
    root = model_dir.resolve()
    for rel, entry in sorted(files.items()):
        path = (model_dir / rel).resolve()
        if not path.is_relative_to(root):
            problems.append(f"{MANIFEST_NAME} lists {rel!r}, which is outside the model folder.")
            continue
        if not path.is_file():
            problems.append(f"{rel} is listed in {MANIFEST_NAME} but missing; re-import the model.")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append(
                f"{rel} has {size} bytes but the manifest says {entry.get('size')}; the file is truncated or "
                "was changed after import. Re-import the model."
            )
            continue
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            problems.append(
                f"{rel} has sha256 {digest} but the manifest says {entry.get('sha256')}; the file is corrupt or "
                "was changed after import. Re-import the model."
            )
    return problems
