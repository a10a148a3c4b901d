"""Prompts in the metadata store (SQLite and PostgreSQL): versions are frozen, numbers never reused,
and a refused change leaves nothing behind."""

from __future__ import annotations

from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.errors import ConflictError, InvalidRequestError, NotFoundError
from outcrop.prompts.service import PromptService
from outcrop.prompts.spec import PromptContent
from outcrop.store.db import Database
from tests.prompts.builders import prompt_request, text_variant


@pytest.fixture
def service(database_url: str) -> PromptService:
    db = Database(database_url)
    db.migrate()
    return PromptService(OutcropConfig(), db)


def content(**overrides: Any) -> PromptContent:
    return PromptContent.model_validate(prompt_request(**overrides))


def test_a_version_keeps_its_content_when_the_draft_changes(service: PromptService) -> None:
    made = service.create(content())
    v1 = service.create_version(made.prompt_id, description="first")
    service.update(made.prompt_id, content(name="explain2", variants=[text_variant(text="Other {{topic}}")]))
    assert service.get(made.prompt_id, "1").content == v1.content
    assert v1.content.description == "first"
    assert service.get(made.prompt_id).content.name == "explain2"
    assert [v.version for v in service.list(made.prompt_id, max_results=None, next_token=None).items] == [
        "DRAFT",
        "1",
    ]


def test_a_deleted_version_number_is_never_given_again(service: PromptService) -> None:
    made = service.create(content())
    service.create_version(made.prompt_id)
    service.create_version(made.prompt_id)
    service.delete(made.prompt_id, "2")
    assert service.create_version(made.prompt_id).version == "3"
    with pytest.raises(NotFoundError, match="has no version 2"):
        service.get(made.prompt_id, "2")


def test_a_taken_name_is_a_conflict_and_creates_nothing(service: PromptService) -> None:
    service.create(content())
    with pytest.raises(ConflictError, match="already exists"):
        service.create(content())
    assert len(service.list(None, max_results=None, next_token=None).items) == 1


def test_a_refused_update_leaves_the_draft_as_it_was(service: PromptService) -> None:
    made = service.create(content())
    with pytest.raises(InvalidRequestError):
        service.update(made.prompt_id, content(variants=[text_variant(variables=())]))
    assert service.get(made.prompt_id).content == made.content


def test_a_retried_create_with_the_same_client_token_answers_the_same_prompt(service: PromptService) -> None:
    token = "t" * 40
    first = service.create(content(), client_token=token)
    assert service.create(content(), client_token=token).prompt_id == first.prompt_id
    v = service.create_version(first.prompt_id, client_token=token)
    assert service.create_version(first.prompt_id, client_token=token).version == v.version == "1"


def test_deleting_a_prompt_deletes_its_versions(service: PromptService) -> None:
    made = service.create(content())
    service.create_version(made.prompt_id)
    service.delete(made.prompt_id)
    with pytest.raises(NotFoundError):
        service.get(made.prompt_id, "1")
    with pytest.raises(NotFoundError):
        service.delete(made.prompt_id)


def test_listing_pages_through_every_prompt(service: PromptService) -> None:
    for i in range(5):
        service.create(content(name=f"p{i}"))
    page = service.list(None, max_results=2, next_token=None)
    names = [v.content.name for v in page.items]
    while page.next_token:
        page = service.list(None, max_results=2, next_token=page.next_token)
        names += [v.content.name for v in page.items]
    assert names == [f"p{i}" for i in range(5)]
