"""The Prompt management operations, with Bedrock's identifiers, ARNs and errors.

A prompt is addressed by its 10-character id or its ARN,
``arn:aws:bedrock:<region>:<account>:prompt/<id>``; ``...:<id>:<n>`` names version ``n``. An
identifier without a version means the DRAFT, the one state that UpdatePrompt changes;
CreatePromptVersion freezes the DRAFT as the next number.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, NotFoundError
from outcrop.prompts.spec import PromptContent, check_content
from outcrop.prompts.store import DRAFT, PromptStore, PromptVersion
from outcrop.store.db import Database

PROMPT_ID_RE = re.compile(r"[0-9a-zA-Z]{10}")
PROMPT_ARN_RE = re.compile(
    r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:prompt/(?P<id>[0-9a-zA-Z]{10})(?::(?P<version>[0-9]{1,5}))?"
)
VERSION_RE = re.compile(r"DRAFT|[0-9]{0,4}[1-9][0-9]{0,4}")
NUMERICAL_VERSION_RE = re.compile(r"[0-9]{1,5}")
PAGE_TOKEN_RE = re.compile(r"[0-9]{1,9}")  # ListPrompts' nextToken: the offset of the next page
# ListPrompts' page size when maxResults is not given (PromptSummaries holds at most 10 in the
# service model).
DEFAULT_PAGE_SIZE = 10


def is_prompt_arn(identifier: str) -> bool:
    """Does a runtime ``modelId`` name a prompt (rather than a model)?"""
    return identifier.startswith("arn:") and ":prompt/" in identifier


@dataclass(frozen=True)
class Page:
    items: list[PromptVersion]
    next_token: str | None


class PromptService:
    def __init__(self, config: OutcropConfig, db: Database) -> None:
        self.identity = config.aws
        self.store = PromptStore(db)

    # -- identifiers -----------------------------------------------------------------------

    def arn(self, prompt_id: str, version: str | None = None) -> str:
        base = f"arn:aws:bedrock:{self.identity.region}:{self.identity.account_id}:prompt/{prompt_id}"
        return base if version in (None, DRAFT) else f"{base}:{version}"

    def version_arn(self, v: PromptVersion) -> str:
        return self.arn(v.prompt_id, v.version)

    @staticmethod
    def parse_identifier(identifier: str, param: str = "promptIdentifier") -> tuple[str, str | None]:
        """``(id, version named in the ARN or None)``, or a ValidationException."""
        if PROMPT_ID_RE.fullmatch(identifier):
            return identifier, None
        match = PROMPT_ARN_RE.fullmatch(identifier)
        if match is None:
            raise InvalidRequestError(
                f"1 validation error detected: Value {identifier[:120]!r} at '{param}' failed to satisfy "
                "constraint: it must be a prompt id (10 letters or digits, e.g. 'PR0MPT1234') or a prompt ARN "
                "(arn:aws:bedrock:<region>:<account>:prompt/<id>[:<version>]).",
                param=param,
            )
        return match.group("id"), match.group("version")

    @staticmethod
    def check_version(version: str, param: str = "promptVersion") -> str:
        if not VERSION_RE.fullmatch(version):
            raise InvalidRequestError(
                f"1 validation error detected: Value {version[:40]!r} at '{param}' failed to satisfy constraint: "
                "it must be DRAFT or a version number (1, 2, ...).",
                param=param,
            )
        return str(int(version)) if version != DRAFT else DRAFT

    def _missing(self, prompt_id: str) -> NotFoundError:
        return NotFoundError("Prompt", prompt_id, "ListPrompts shows the prompts there are.")

    # -- operations -----------------------------------------------------------------------

    def create(
        self, content: PromptContent, *, client_token: str | None = None, tags: dict[str, str] | None = None
    ) -> PromptVersion:
        check_content(content)
        if client_token:
            earlier = self.store.by_client_token(client_token)
            if earlier is not None:  # a retry of a create that succeeded: answer it again
                found = self.store.version(earlier, DRAFT)
                if found is not None:
                    return found
        return self.store.create(content, client_token=client_token, tags=tags or {}, now=time.time())

    def get(self, identifier: str, version: str | None = None) -> PromptVersion:
        prompt_id, arn_version = self.parse_identifier(identifier)
        wanted = self.check_version(version or arn_version or DRAFT)
        found = self.store.version(prompt_id, wanted)
        if found is not None:
            return found
        if wanted != DRAFT and self.store.exists(prompt_id):
            raise NotFoundError(
                "Prompt version",
                f"{prompt_id}:{wanted}",
                f"Prompt {prompt_id} has no version {wanted}; ListPrompts with promptIdentifier={prompt_id} "
                "lists its versions.",
            )
        raise self._missing(prompt_id)

    def update(self, identifier: str, content: PromptContent) -> PromptVersion:
        prompt_id, arn_version = self.parse_identifier(identifier)
        if arn_version is not None:
            raise InvalidRequestError(
                f"Version {arn_version} of prompt {prompt_id} cannot change: numbered versions are immutable. "
                "Update the DRAFT (the ARN without ':<version>') and create a new version from it.",
                param="promptIdentifier",
            )
        check_content(content)
        updated = self.store.update_draft(prompt_id, content, now=time.time())
        if updated is None:
            raise self._missing(prompt_id)
        return updated

    def create_version(
        self,
        identifier: str,
        *,
        description: str | None = None,
        client_token: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> PromptVersion:
        prompt_id, _ = self.parse_identifier(identifier)
        made = self.store.create_version(
            prompt_id, description=description, client_token=client_token, tags=tags or {}, now=time.time()
        )
        if made is None:
            raise self._missing(prompt_id)
        return made

    def list(self, identifier: str | None, *, max_results: int | None, next_token: str | None) -> Page:
        """Every prompt's DRAFT, or, given ``identifier``, that prompt's DRAFT and versions."""
        if identifier:
            prompt_id, _ = self.parse_identifier(identifier)
            items = self.store.versions(prompt_id)
            if not items:
                raise self._missing(prompt_id)
        else:
            items = self.store.drafts()
        start = 0
        if next_token:
            if not PAGE_TOKEN_RE.fullmatch(next_token) or int(next_token) > len(items):
                raise InvalidRequestError(
                    f"The nextToken {next_token[:40]!r} is not one this server gave; start the listing again "
                    "without it.",
                    param="nextToken",
                )
            start = int(next_token)
        size = max_results or DEFAULT_PAGE_SIZE
        end = start + size
        return Page(items[start:end], str(end) if end < len(items) else None)

    def delete(self, identifier: str, version: str | None = None) -> tuple[str, str | None]:
        """Delete the prompt (every version) or, given ``version``, that numbered version."""
        prompt_id, _ = self.parse_identifier(identifier)
        if version is None:
            if not self.store.delete(prompt_id):
                raise self._missing(prompt_id)
            return prompt_id, None
        if not NUMERICAL_VERSION_RE.fullmatch(version) or int(version) == 0:
            raise InvalidRequestError(
                f"1 validation error detected: Value {version[:40]!r} at 'promptVersion' failed to satisfy "
                "constraint: it must be a version number (1, 2, ...). To delete the DRAFT, delete the prompt "
                "(without promptVersion).",
                param="promptVersion",
            )
        number = str(int(version))
        if not self.store.delete_version(prompt_id, number):
            self.get(prompt_id, number)  # raises: no such prompt, or no such version
        return prompt_id, number

    def resolve(self, prompt_arn: str) -> PromptVersion:
        """The version a runtime ``modelId`` (a prompt ARN, with or without a version) names."""
        prompt_id, version = self.parse_identifier(prompt_arn, param="modelId")
        return self.get(prompt_id, version)
