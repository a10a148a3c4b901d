from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from outcrop.engine.loader import MANIFEST_NAME, verify_model_dir
from outcrop.errors import ModelValidationError


def _with_manifest(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    files = {}
    for f in sorted(dst.iterdir()):
        data = f.read_bytes()
        files[f.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (dst / MANIFEST_NAME).write_text(json.dumps({"files": files}))
    return dst


def test_a_folder_matching_its_manifest_passes(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    verify_model_dir(_with_manifest(tiny_models["llama"], tmp_path / "m"))


def test_a_folder_without_manifest_passes(tiny_models: dict[str, Path]) -> None:
    verify_model_dir(tiny_models["llama"])


def test_a_changed_weight_file_is_refused_with_its_name(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    folder = _with_manifest(tiny_models["llama"], tmp_path / "m")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelValidationError, match=r"model\.safetensors has sha256"):
        verify_model_dir(folder)


def test_a_truncated_or_missing_file_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    folder = _with_manifest(tiny_models["llama"], tmp_path / "m")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "config.json").unlink()
    with pytest.raises(ModelValidationError) as info:
        verify_model_dir(folder)
    message = str(info.value)
    assert "tokenizer.json has" in message and "config.json" in message


def test_a_folder_without_safetensors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelValidationError, match="safetensors"):
        verify_model_dir(tmp_path)
