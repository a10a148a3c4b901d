"""The LanceDB vector store: exact where the answer is known, every filter operator, hybrid,
deletes, reopening, and the ANN index's results against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from outcrop.knowledge import store as store_mod
from outcrop.knowledge.store import FilterError, open_store
from outcrop.knowledge.types import CHUNK_ID_KEY, SOURCE_URI_KEY, Chunk

DIM = 16
WORDS = [
    "apple",
    "banana",
    "cherry",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


def _chunks(n: int, seed: int = 0, ds: str = "DS1") -> list[Chunk]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(
            Chunk(
                chunk_id=f"{ds}-c{i}",
                data_source_id=ds,
                source_uri=f"s3://bucket/doc{i % 7}.txt",
                text=" ".join(rng.choice(WORDS, 8)) + f" item{i}",
                vector=rng.standard_normal(DIM).astype("float32").tolist(),
                metadata={
                    "year": 2000 + i,
                    "genre": "drama" if i % 2 else "comedy",
                    "tags": ["red", "blue"] if i % 3 == 0 else ["green"],
                    "public": i % 4 == 0,
                    "title": f"Title {i}",
                },
            )
        )
    return out


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "vectors"))
    s.create("KB1", DIM)
    return s


def _ids(hits):
    return [h.chunk_id for h in hits]


def test_a_query_equal_to_a_stored_vector_finds_it_first(store):
    chunks = _chunks(60)
    store.upsert("KB1", chunks)
    for c in chunks[:10]:
        hits = store.search("KB1", vector=c.vector, text="", k=3)
        assert hits[0].chunk_id == c.chunk_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].metadata[SOURCE_URI_KEY] == c.source_uri
        assert hits[0].metadata[CHUNK_ID_KEY] == c.chunk_id
        assert all(0.0 <= h.score <= 1.0 for h in hits)


def test_upsert_is_idempotent_by_chunk_id(store):
    chunks = _chunks(20)
    store.upsert("KB1", chunks)
    store.upsert("KB1", chunks[:10])
    assert store.count("KB1") == 20


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"equals": {"key": "genre", "value": "drama"}}, lambda i: i % 2 == 1),
        ({"notEquals": {"key": "genre", "value": "drama"}}, lambda i: i % 2 == 0),
        ({"equals": {"key": "year", "value": 2005}}, lambda i: i == 5),
        ({"equals": {"key": "public", "value": True}}, lambda i: i % 4 == 0),
        ({"greaterThan": {"key": "year", "value": 2020}}, lambda i: i > 20),
        ({"greaterThanOrEquals": {"key": "year", "value": 2020}}, lambda i: i >= 20),
        ({"lessThan": {"key": "year", "value": 2003}}, lambda i: i < 3),
        ({"lessThanOrEquals": {"key": "year", "value": 2003}}, lambda i: i <= 3),
        ({"in": {"key": "title", "value": ["Title 1", "Title 2"]}}, lambda i: i in (1, 2)),
        ({"notIn": {"key": "title", "value": ["Title 1", "Title 2"]}}, lambda i: i not in (1, 2)),
        ({"startsWith": {"key": "title", "value": "Title 1"}}, lambda i: str(i).startswith("1")),
        ({"listContains": {"key": "tags", "value": "red"}}, lambda i: i % 3 == 0),
        ({"stringContains": {"key": "title", "value": "e 2"}}, lambda i: str(i).startswith("2")),
        ({"stringContains": {"key": "tags", "value": "ree"}}, lambda i: i % 3 != 0),
        (
            {"equals": {"key": "x-amz-bedrock-kb-source-uri", "value": "s3://bucket/doc3.txt"}},
            lambda i: i % 7 == 3,
        ),
        ({"equals": {"key": "missing", "value": "x"}}, lambda i: False),
        ({"notEquals": {"key": "missing", "value": "x"}}, lambda i: False),
        (
            {
                "andAll": [
                    {"equals": {"key": "genre", "value": "drama"}},
                    {"lessThan": {"key": "year", "value": 2010}},
                ]
            },
            lambda i: i % 2 == 1 and i < 10,
        ),
        (
            {
                "orAll": [
                    {"equals": {"key": "year", "value": 2001}},
                    {"equals": {"key": "year", "value": 2002}},
                ]
            },
            lambda i: i in (1, 2),
        ),
    ],
)
def test_every_filter_operator_keeps_exactly_what_it_should(store, spec, expected):
    chunks = _chunks(30)
    store.upsert("KB1", chunks)
    hits = store.search("KB1", vector=chunks[0].vector, text="", k=100, filter=spec)
    assert sorted(_ids(hits)) == sorted(c.chunk_id for i, c in enumerate(chunks) if expected(i))


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"like": {"key": "a", "value": "b"}}, "like"),
        ({"equals": {"key": "a"}}, "key"),
        (
            {"equals": {"key": "a", "value": "b"}, "notEquals": {"key": "a", "value": "b"}},
            "exactly one operator",
        ),
        ({"andAll": [{"equals": {"key": "a", "value": "b"}}]}, "2 to 5"),
        ({"greaterThan": {"key": "year", "value": "2000"}}, "number"),
        ({"in": {"key": "year", "value": []}}, "non-empty list"),
        ({"listContains": {"key": "x-amz-bedrock-kb-source-uri", "value": "a"}}, "not a list"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_problem(store, spec, named):
    store.upsert("KB1", _chunks(5))
    with pytest.raises(FilterError) as err:
        store.search("KB1", vector=[0.1] * DIM, text="", k=3, filter=spec)
    assert named in err.value.message


def test_hybrid_finds_a_keyword_match_that_semantic_ranks_low(store):
    chunks = _chunks(200)
    special = Chunk(
        chunk_id="needle",
        data_source_id="DS1",
        source_uri="s3://bucket/needle.txt",
        text="the zeppelin quartermaster ledger",
        vector=(-np.asarray(chunks[0].vector)).tolist(),  # as far from the query as it gets
        metadata={},
    )
    store.upsert("KB1", [*chunks, special])
    query = chunks[0].vector
    semantic = store.search("KB1", vector=query, text="zeppelin quartermaster", k=5)
    assert "needle" not in _ids(semantic)
    hybrid = store.search("KB1", vector=query, text="zeppelin quartermaster", k=5, search_type="HYBRID")
    assert "needle" in _ids(hybrid)
    assert chunks[0].chunk_id in _ids(hybrid)


def test_deletes_by_document_and_by_data_source(store):
    store.upsert("KB1", _chunks(14, ds="DS1") + _chunks(5, ds="DS2"))
    gone = store.delete_documents("KB1", "DS1", ["s3://bucket/doc0.txt", "s3://bucket/doc1.txt"])
    assert gone == 4
    assert store.count("KB1") == 15
    assert store.delete_data_source("KB1", "DS2") == 5
    assert store.count("KB1") == 10
    store.drop("KB1")
    assert store.count("KB1") == 0
    assert store.search("KB1", vector=[0.1] * DIM, text="x", k=3) == []


def test_data_survives_reopening(tmp_path):
    s = open_store(str(tmp_path / "v"))
    chunks = _chunks(10)
    s.upsert("KB9", chunks)
    again = open_store(str(tmp_path / "v"))
    assert again.count("KB9") == 10
    assert again.search("KB9", vector=chunks[3].vector, text="", k=1)[0].chunk_id == chunks[3].chunk_id


def test_hierarchical_hits_return_the_parent_text(store):
    c = Chunk(
        "p1", "DS1", "s3://b/a.txt", "child words", [1.0] + [0.0] * (DIM - 1), {}, parent_text="the parent"
    )
    store.upsert("KB1", [c])
    assert store.search("KB1", vector=c.vector, text="", k=1)[0].text == "the parent"


def test_the_ann_index_agrees_with_exact_search(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "INDEX_MIN_ROWS", 2_000)
    monkeypatch.setattr(store_mod, "REINDEX_UNINDEXED_ROWS", 500)
    s = open_store(str(tmp_path / "ann"))
    chunks = _chunks(3_000, seed=3)
    s.upsert("KB1", chunks[:2_500])
    table = s._table("KB1")
    assert store_mod.VECTOR_INDEX in {ix.name for ix in table.list_indices()}
    s.upsert("KB1", chunks[2_500:])  # after the index: scanned beside it until folded in
    for c in (chunks[10], chunks[2_900]):
        assert s.search("KB1", vector=c.vector, text="", k=1)[0].chunk_id == c.chunk_id


def test_fold_ins_past_max_deltas_rebuild_the_index_in_one_piece(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "INDEX_MIN_ROWS", 300)
    monkeypatch.setattr(store_mod, "REINDEX_UNINDEXED_ROWS", 50)
    monkeypatch.setattr(store_mod, "MAX_INDEX_DELTAS", 2)
    s = open_store(str(tmp_path / "ann"))
    chunks = _chunks(500, seed=5)
    s.upsert("KB1", chunks[:300])
    for start in range(300, 500, 50):  # each a fold-in: a delta index, until the rebuild
        s.upsert("KB1", chunks[start : start + 50])
        assert s._table("KB1").index_stats(store_mod.VECTOR_INDEX).num_indices <= 2
    for c in (chunks[7], chunks[499]):
        assert s.search("KB1", vector=c.vector, text="", k=1)[0].chunk_id == c.chunk_id
