"""A node gets a verified model folder: the shared one when it sees it, else fetched from the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from outcrop.cluster.node_models import MANIFEST_NAME, ensure_model_folder, folder_matches
from outcrop.errors import ModelValidationError


def make_store(root: Path, files: dict[str, bytes]) -> list[tuple[str, str, int]]:
    entries = []
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        blob = root / "blobs" / "sha256" / sha[:2] / sha
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        entries.append((path, sha, len(data)))
    return entries


FILES = {"config.json": b'{"model_type": "llama"}', "weights/model.safetensors": b"\x00" * 1000}


def test_a_node_that_sees_the_shared_folder_uses_it_as_it_is(tmp_path: Path) -> None:
    entries = make_store(tmp_path / "store", FILES)
    cache = tmp_path / "cache"
    first = ensure_model_folder(str(tmp_path / "missing"), "m1", entries, str(tmp_path / "store"), cache)
    assert first == cache / "models" / "m1"
    again = ensure_model_folder(str(first), "m1", entries, None, tmp_path / "other-cache")
    assert again == first


def test_a_node_without_the_folder_fetches_and_verifies_the_blobs(tmp_path: Path) -> None:
    entries = make_store(tmp_path / "store", FILES)
    folder = ensure_model_folder(
        str(tmp_path / "nope"), "m1", entries, str(tmp_path / "store"), tmp_path / "c"
    )
    assert (folder / "weights" / "model.safetensors").read_bytes() == FILES["weights/model.safetensors"]
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == set(FILES)
    assert folder_matches(folder, "m1", entries)


def test_a_corrupted_blob_is_refused_with_the_file_named(tmp_path: Path) -> None:
    entries = make_store(tmp_path / "store", FILES)
    _, sha, _ = entries[1]
    blob = tmp_path / "store" / "blobs" / "sha256" / sha[:2] / sha
    blob.write_bytes(b"\x01" * 1000)
    with pytest.raises(ModelValidationError, match=r"model\.safetensors.*corrupted"):
        ensure_model_folder(str(tmp_path / "nope"), "m1", entries, str(tmp_path / "store"), tmp_path / "c")
    assert not (tmp_path / "c" / "models" / "m1").exists()


def test_a_node_that_sees_neither_folder_nor_store_says_what_to_mount(tmp_path: Path) -> None:
    with pytest.raises(ModelValidationError, match="mount the store"):
        ensure_model_folder(
            str(tmp_path / "a"), "m1", [("x", "0" * 64, 1)], str(tmp_path / "b"), tmp_path / "c"
        )
