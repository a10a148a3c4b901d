"""Guardrails in the metadata store (SQLite and PostgreSQL): drafts, immutable versions, deletes."""

from __future__ import annotations

import pytest

from outcrop.errors import ConflictError, NotFoundError
from outcrop.guardrails.policy import CreateGuardrailRequest, GuardrailSpec, parse_guardrail_config
from outcrop.guardrails.store import DRAFT, GuardrailStore
from outcrop.store.db import Database


def spec(name: str = "g1", blocked: str = "No.") -> GuardrailSpec:
    body = CreateGuardrailRequest.model_validate(
        {
            "name": name,
            "blockedInputMessaging": blocked,
            "blockedOutputsMessaging": "No!",
            "wordPolicyConfig": {"wordsConfig": [{"text": "zephyr"}]},
        }
    )
    return parse_guardrail_config(body, None)


@pytest.fixture
def store(database_url: str) -> GuardrailStore:
    db = Database(database_url)
    db.migrate()
    return GuardrailStore(db)


def test_versions_are_snapshots_of_the_draft_and_never_change(store: GuardrailStore) -> None:
    row = store.create(spec(), [{"key": "team", "value": "a"}], None)
    assert row.version == DRAFT and row.status == "READY"
    assert store.create_version(row.id, "v1", None) == "1"
    store.update(row.id, spec(blocked="Changed."))
    assert store.get(row.id).spec.blocked_input_messaging == "Changed."
    v1 = store.get(row.id, "1")
    assert v1.spec.blocked_input_messaging == "No." and v1.description == "v1"
    assert store.create_version(row.id, None, "tok") == "2"
    assert store.create_version(row.id, None, "tok") == "2"  # a retried request
    assert [r.version for r in store.list_versions(row.id)] == [DRAFT, "1", "2"]
    store.delete(row.id, "1")
    with pytest.raises(NotFoundError):
        store.get(row.id, "1")
    assert store.create_version(row.id, None, None) == "3"  # numbers are never reused
    store.delete(row.id, None)
    with pytest.raises(NotFoundError):
        store.get(row.id)


def test_names_are_unique_and_tokens_idempotent(store: GuardrailStore) -> None:
    a = store.create(spec("same"), [], "t1")
    assert store.create(spec("same"), [], "t1").id == a.id
    with pytest.raises(ConflictError):
        store.create(spec("same"), [], None)
    b = store.create(spec("other"), [], None)
    with pytest.raises(ConflictError):
        store.update(b.id, spec("same"))
    assert store.find_id("other") == b.id and store.find_id(b.id) == b.id and store.find_id("nope") is None
