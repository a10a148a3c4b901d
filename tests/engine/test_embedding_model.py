"""The embedding copy's pieces without a server: pooling, forward planning, truncation, the launcher's choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from outcrop.cluster.launchers import LaunchRequest, LocalLauncher
from outcrop.config import ServingConfig
from outcrop.engine.embedding_model import pack_rows, plan_forwards, pool, pooling_modes
from outcrop.engine.embedding_worker import shape_vectors
from outcrop.errors import WrongModelKindError
from outcrop.serving.routing import EMBEDDINGS_PATH, check_model_kind
from outcrop.store.imports import ImportedModel


def test_last_token_pooling_takes_each_rows_last_real_token_under_right_padding() -> None:
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [batch, seq, dim]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "lasttoken").tolist() == [[2.0, 3.0], [10.0, 11.0]]
    assert pool(hidden, mask, "cls").tolist() == [[0.0, 1.0], [6.0, 7.0]]
    assert pool(hidden, mask, "mean").tolist() == [[1.0, 2.0], [8.0, 9.0]]


@pytest.mark.parametrize(
    ("lengths", "budget", "plans"),
    [
        ([5, 1, 3], 100, [[1, 2, 0]]),  # one forward, sorted by length
        ([10, 10, 10, 10], 20, [[0, 1], [2, 3]]),  # cut at the padded-token budget
        ([50], 10, [[0]]),  # an input longer than the budget still gets its forward
        ([], 10, []),
    ],
)
def test_forwards_are_length_sorted_and_cut_at_the_token_budget(
    lengths: list[int], budget: int, plans: list[list[int]]
) -> None:
    assert plan_forwards(lengths, budget) == plans


def test_legacy_and_current_pooling_configs_read_alike() -> None:
    assert pooling_modes({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}) == ["mean"]
    assert pooling_modes({"pooling_mode": "lasttoken"}) == ["lasttoken"]


def test_truncated_vectors_of_a_normalizing_model_are_renormalized() -> None:
    vectors = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    short = shape_vectors(vectors, 4, None, model_normalizes=True)
    assert short.shape == (3, 4)
    assert torch.allclose(short.norm(dim=1), torch.ones(3))
    raw = torch.randn(2, 8) * 5
    assert torch.equal(shape_vectors(raw, None, None, model_normalizes=False), raw)
    assert torch.allclose(shape_vectors(raw, None, True, model_normalizes=False).norm(dim=1), torch.ones(2))


def _model(kind: str) -> ImportedModel:
    return ImportedModel(
        id="abc123def456", name="m", source_uri="/m", architecture="BertModel", model_type="bert",
        parameter_count=1, dtype="float32", context_length=128, size_bytes=1, instruct_supported=False,
        memory_estimate_bytes=1, kind=kind,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "path", "refused"),
    [
        ("embedding", EMBEDDINGS_PATH, False),
        ("embedding", "/v1/completions", True),
        ("embedding", "/v1/chat/completions", True),
        ("text", "/v1/completions", False),
        ("text", EMBEDDINGS_PATH, True),
    ],
)
def test_the_router_refuses_a_path_of_the_other_kind(kind: str, path: str, refused: bool) -> None:
    if refused:
        with pytest.raises(WrongModelKindError):
            check_model_kind(_model(kind), path)
    else:
        check_model_kind(_model(kind), path)


def test_the_local_launcher_runs_the_embedding_worker_for_an_embedding_model() -> None:
    launcher = LocalLauncher(ServingConfig())
    base = {
        "copy_id": "c", "model_id": "abc123def456", "served_name": "m", "model_dir": Path("/models/m"),
        "host": "127.0.0.1", "port": 8000, "log_path": Path("/l"),
    }  # fmt: skip
    assert "outcrop.engine.embedding_worker" in launcher.command(LaunchRequest(**base, kind="embedding"))  # type: ignore[arg-type]
    assert "outcrop.engine.worker" in launcher.command(LaunchRequest(**base))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lengths", "width", "rows"),
    [
        ([4, 2, 2], 4, [[0], [1, 2]]),  # longest first; short ones share a row
        ([1, 1, 1, 1], 4, [[0, 1, 2, 3]]),
        ([3, 3, 2], 3, [[0], [1], [2]]),
    ],
)
def test_inputs_are_packed_first_fit_decreasing(
    lengths: list[int], width: int, rows: list[list[int]]
) -> None:
    assert pack_rows(lengths, width) == rows


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
def test_packed_forwards_equal_padded_ones(tmp_path: Path, family: str) -> None:
    from outcrop.engine.embedding_model import EmbeddingModel
    from outcrop.testing.tiny_embedders import build_tiny_embedder

    model = EmbeddingModel(build_tiny_embedder(tmp_path / family, family=family))
    texts = ["hello world", "a", "the quick brown fox jumps over the lazy dog", "你好", [5, 6, 7]]
    assert model.packed
    packed, counts = model.embed(texts)
    model.packed = False
    padded, _ = model.embed(texts)
    assert torch.allclose(packed, padded, atol=1e-5)
    assert counts[4] == 3
