"""The knowledge-base operations, with Bedrock's identifiers, statuses, shapes and errors.

What the ``bedrock-agent`` routes (outcrop/api/agent/knowledge.py), the ``Retrieve`` route, the
``outcrop kb`` CLI and RetrieveAndGenerate (outcrop/knowledge/rag.py, through
:meth:`KnowledgeService.retrieve` and :meth:`KnowledgeService.get_knowledge_base`) call. It owns
the metadata (:class:`~outcrop.knowledge.kbstore.KBStore`), the vector store
(:mod:`outcrop.knowledge.store`, opened on first use), query and ingestion embeddings
(:class:`~outcrop.knowledge.ingestion.Embedder`, through the router) and the ingestion runner.

A knowledge base is ``type: VECTOR`` on an imported *embedding* model (its ARN or name in
``embeddingModelArn``); its vectors live in Outcrop's own store (``knowledge.vector_store_uri``),
so a ``storageConfiguration`` is accepted and shown back but not used. Ids are Bedrock's
10-character ``[0-9A-Z]``; the ARN is ``arn:aws:bedrock:<region>:<account>:knowledge-base/<id>``.
Answers are the service model's shapes as plain dicts (timestamps as epoch seconds; the route
writes them as ISO 8601).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outcrop.config import OutcropConfig
from outcrop.errors import ConflictError, InvalidRequestError, NotFoundError, OutcropError
from outcrop.knowledge.chunking import validate_chunking
from outcrop.knowledge.ingestion import Embedder, IngestionRunner
from outcrop.knowledge.kbstore import (
    DataSource,
    DataSourceStatus,
    IngestionJob,
    IngestionJobStatus,
    KBStore,
    KnowledgeBase,
    KnowledgeBaseStatus,
    empty_statistics,
    new_id,
)
from outcrop.knowledge.sources import check_source
from outcrop.knowledge.types import SearchType, VectorStore
from outcrop.registry.service import Registry
from outcrop.registry.tokenizers import TokenizerCache
from outcrop.serving.routing import Priority
from outcrop.store.db import Database
from outcrop.store.imports import ImportedModel

log = logging.getLogger("outcrop.knowledge")

ID_RE = re.compile(r"[0-9a-zA-Z]{10}")
KB_ARN_RE = re.compile(
    r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:knowledge-base/(?P<id>[0-9a-zA-Z]{10})"
)
NAME_RE = re.compile(r"([0-9a-zA-Z][_-]?){1,100}")
ROLE_ARN_RE = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
PAGE_TOKEN_RE = re.compile(r"[0-9]{1,9}")
# List operations' page size when maxResults is not given.
DEFAULT_PAGE_SIZE = 100
# Retrieve's numberOfResults when not given, and its bounds (the service model's).
DEFAULT_NUMBER_OF_RESULTS = 5
MAX_NUMBER_OF_RESULTS = 100
DELETION_POLICIES = ("DELETE", "RETAIN")
SEARCH_TYPES = ("HYBRID", "SEMANTIC")
_TOKENIZER_LOCK = threading.Lock()
_STORE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_token: str | None


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _check_name(name: Any, param: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _bad(
            f"1 validation error detected: Value {str(name)[:120]!r} at '{param}' failed to satisfy constraint: "
            "Member must be 1-100 letters or digits, each optionally followed by one '_' or '-' "
            "(for example 'product-docs').",
            param,
        )
    return name


def _check_description(value: Any, param: str = "description") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise _bad(f"'{param}' must be 1-200 characters (or left out).", param)
    return value


def _page(items: list[Any], max_results: int | None, next_token: str | None) -> Page:
    start = 0
    if next_token:
        if not PAGE_TOKEN_RE.fullmatch(next_token) or int(next_token) > len(items):
            raise _bad(
                f"The nextToken {next_token[:40]!r} is not one this server gave; start the listing again without it.",
                "nextToken",
            )
        start = int(next_token)
    end = start + (max_results or DEFAULT_PAGE_SIZE)
    return Page(items[start:end], str(end) if end < len(items) else None)


class KnowledgeService:
    def __init__(
        self,
        config: OutcropConfig,
        db: Database,
        registry: Registry,
        serving: Any,
        *,
        vectors: VectorStore | None = None,
        start_runner: bool = True,
    ) -> None:
        self.config = config
        self.identity = config.aws
        self.kbstore = KBStore(db)
        self.registry = registry
        self.serving = serving
        self.embedder = Embedder(config, serving)
        self.tokenizers = TokenizerCache(registry)
        self._vectors = vectors
        self.runner: IngestionRunner | None = IngestionRunner(self) if start_runner else None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Finish what a crash left half-done (knowledge bases CREATING or DELETING, data sources
        DELETING), then start the ingestion runner."""
        for kb in await asyncio.to_thread(self.kbstore.list_kbs, [KnowledgeBaseStatus.CREATING.value]):
            await self._make_table(kb)
        for kb in await asyncio.to_thread(self.kbstore.list_kbs, [KnowledgeBaseStatus.DELETING.value]):
            self._spawn(self._finish_kb_delete(kb.id))
        for ds in await asyncio.to_thread(self.kbstore.list_ds, None, [DataSourceStatus.DELETING.value]):
            self._spawn(self._finish_ds_delete(ds))
        if self.runner is not None:
            await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def vectors(self) -> VectorStore:
        with _STORE_LOCK:  # opened once, whichever thread asks first
            if self._vectors is None:
                from outcrop.knowledge.store import open_store, s3_storage_options

                uri = self.config.knowledge_store_uri
                options = s3_storage_options(self.config.s3) if uri.startswith("s3://") else None
                self._vectors = open_store(uri, options)
            return self._vectors

    # -- identifiers ---------------------------------------------------------------------

    def kb_arn(self, kb_id: str) -> str:
        return f"arn:aws:bedrock:{self.identity.region}:{self.identity.account_id}:knowledge-base/{kb_id}"

    @staticmethod
    def parse_kb_identifier(identifier: str, param: str = "knowledgeBaseId") -> str:
        """A knowledge base id or ARN -> its id; a ValidationException otherwise."""
        if ID_RE.fullmatch(identifier):
            return identifier
        match = KB_ARN_RE.fullmatch(identifier)
        if match is None:
            raise _bad(
                f"1 validation error detected: Value {identifier[:120]!r} at '{param}' failed to satisfy "
                "constraint: it must be a knowledge base id (10 letters or digits) or its ARN "
                "(arn:aws:bedrock:<region>:<account>:knowledge-base/<id>).",
                param,
            )
        return match.group("id")

    @staticmethod
    def _check_id(value: str, param: str) -> str:
        if not ID_RE.fullmatch(value):
            raise _bad(
                f"1 validation error detected: Value {value[:120]!r} at '{param}' failed to satisfy constraint: "
                "Member must match [0-9a-zA-Z]{10}.",
                param,
            )
        return value

    def _kb(self, identifier: str) -> KnowledgeBase:
        kb_id = self.parse_kb_identifier(identifier)
        kb = self.kbstore.get_kb(kb_id)
        if kb is None:
            raise NotFoundError(
                "Knowledge base", kb_id, "ListKnowledgeBases shows the knowledge bases there are."
            )
        return kb

    def _ds(self, kb_id: str, ds_id: str) -> DataSource:
        kb = self._kb(kb_id)
        self._check_id(ds_id, "dataSourceId")
        ds = self.kbstore.get_ds(kb.id, ds_id)
        if ds is None:
            raise NotFoundError(
                "Data source", ds_id, f"ListDataSources with knowledgeBaseId={kb.id} shows its data sources."
            )
        return ds

    def _usable(self, kb: KnowledgeBase) -> None:
        if kb.status != KnowledgeBaseStatus.ACTIVE:
            reasons = f" ({'; '.join(kb.failure_reasons)})" if kb.failure_reasons else ""
            raise ConflictError(
                f"Knowledge base {kb.id} is {kb.status}{reasons}; only an ACTIVE knowledge base takes this "
                "request. GetKnowledgeBase shows its status."
            )

    # -- wire shapes ---------------------------------------------------------------------

    def kb_wire(self, kb: KnowledgeBase) -> dict[str, Any]:
        out: dict[str, Any] = {
            "knowledgeBaseId": kb.id,
            "name": kb.name,
            "knowledgeBaseArn": self.kb_arn(kb.id),
            **{k: v for k, v in kb.spec.items() if v is not None},
            "status": kb.status,
            "createdAt": kb.created_at,
            "updatedAt": kb.updated_at,
        }
        if kb.failure_reasons:
            out["failureReasons"] = kb.failure_reasons
        return out

    @staticmethod
    def kb_summary(kb: KnowledgeBase) -> dict[str, Any]:
        out = {"knowledgeBaseId": kb.id, "name": kb.name, "status": kb.status, "updatedAt": kb.updated_at}
        if kb.spec.get("description"):
            out["description"] = kb.spec["description"]
        return out

    @staticmethod
    def ds_wire(ds: DataSource) -> dict[str, Any]:
        out: dict[str, Any] = {
            "knowledgeBaseId": ds.knowledge_base_id,
            "dataSourceId": ds.id,
            "name": ds.name,
            "status": ds.status,
            **{k: v for k, v in ds.spec.items() if v is not None},
            "createdAt": ds.created_at,
            "updatedAt": ds.updated_at,
        }
        if ds.failure_reasons:
            out["failureReasons"] = ds.failure_reasons
        return out

    @staticmethod
    def ds_summary(ds: DataSource) -> dict[str, Any]:
        out = {
            "knowledgeBaseId": ds.knowledge_base_id,
            "dataSourceId": ds.id,
            "name": ds.name,
            "status": ds.status,
            "updatedAt": ds.updated_at,
        }
        if ds.spec.get("description"):
            out["description"] = ds.spec["description"]
        return out

    @staticmethod
    def job_wire(job: IngestionJob, *, summary: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "knowledgeBaseId": job.knowledge_base_id,
            "dataSourceId": job.data_source_id,
            "ingestionJobId": job.id,
            "status": job.status,
            "statistics": {**empty_statistics(), **job.statistics},
            "startedAt": job.started_at,
            "updatedAt": job.updated_at,
        }
        if job.description:
            out["description"] = job.description
        if job.failure_reasons and not summary:
            out["failureReasons"] = job.failure_reasons
        return out

    # -- embedding models ----------------------------------------------------------------

    def _embedding_model(self, arn: Any, param: str) -> ImportedModel:
        if not isinstance(arn, str) or not arn:
            raise _bad(
                f"'{param}' is required: the ARN (or name) of an imported embedding model "
                "(arn:aws:bedrock:<region>:<account>:imported-model/<id>).",
                param,
            )
        try:
            model = self.registry.get_model(arn)
        except (NotFoundError, InvalidRequestError):
            raise _bad(
                f"{param} {arn[:200]!r} does not name an imported model on this server. Import a sentence-embedding "
                "model (docs/embeddings.md) and give its ARN (arn:aws:bedrock:<region>:<account>:imported-model/<id>) "
                "or its name; GetImportedModel/ListImportedModels shows them.",
                param,
            ) from None
        if not model.is_embedding:
            raise _bad(
                f"{param} names '{model.name}', a text-generation model, but a knowledge base needs an embedding "
                "model (kind 'embedding') to turn documents and queries into vectors. Import a sentence-embedding "
                "model (a sentence-transformers folder with modules.json, e.g. a BERT or Qwen3-Embedding "
                "checkpoint; docs/embeddings.md) and give its ARN.",
                param,
            )
        return model

    def _vector_config(self, configuration: Any) -> tuple[dict[str, Any], ImportedModel, int]:
        """Checks ``knowledgeBaseConfiguration``; (the configuration to keep, the model, dimensions)."""
        prefix = "knowledgeBaseConfiguration"
        if not isinstance(configuration, dict):
            raise _bad(
                f"'{prefix}' is required: {{'type': 'VECTOR', 'vectorKnowledgeBaseConfiguration': ...}}.",
                prefix,
            )
        kind = configuration.get("type")
        if kind != "VECTOR":
            raise _bad(
                f"{prefix}.type is {kind!r}; Outcrop's knowledge bases are VECTOR knowledge bases on an imported "
                "embedding model. Use type 'VECTOR' with vectorKnowledgeBaseConfiguration.embeddingModelArn.",
                f"{prefix}.type",
            )
        vector = configuration.get("vectorKnowledgeBaseConfiguration")
        if not isinstance(vector, dict):
            raise _bad(
                f"{prefix}.vectorKnowledgeBaseConfiguration is required for type VECTOR: "
                "{'embeddingModelArn': <ARN of an imported embedding model>}.",
                f"{prefix}.vectorKnowledgeBaseConfiguration",
            )
        for key in vector:
            if key not in ("embeddingModelArn", "embeddingModelConfiguration"):
                raise _bad(
                    f"{prefix}.vectorKnowledgeBaseConfiguration.{key} is not supported by Outcrop (text documents "
                    "only); remove it.",
                    f"{prefix}.vectorKnowledgeBaseConfiguration.{key}",
                )
        param = f"{prefix}.vectorKnowledgeBaseConfiguration.embeddingModelArn"
        model = self._embedding_model(vector.get("embeddingModelArn"), param)
        full = int(model.embedding_dimension or 0)
        dims = full
        emc = vector.get("embeddingModelConfiguration") or {}
        bedrock = emc.get("bedrockEmbeddingModelConfiguration") or {} if isinstance(emc, dict) else {}
        if isinstance(bedrock, dict):
            if bedrock.get("embeddingDataType", "FLOAT32") != "FLOAT32":
                raise _bad(
                    "embeddingDataType BINARY is not supported; Outcrop stores FLOAT32 vectors. Leave it out or "
                    "use FLOAT32.",
                    f"{param[: -len('embeddingModelArn')]}embeddingModelConfiguration",
                )
            for key in ("audio", "video", "modelConfiguration"):
                if bedrock.get(key) is not None:
                    raise _bad(f"bedrockEmbeddingModelConfiguration.{key} is not supported; remove it.", key)
            if bedrock.get("dimensions") is not None:
                from outcrop.protocol.embeddings import check_dimensions

                wanted = bedrock["dimensions"]
                if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1:
                    raise _bad("dimensions must be a positive integer.", "dimensions")
                check_dimensions(model, wanted, param="bedrockEmbeddingModelConfiguration.dimensions")
                dims = wanted
        if dims <= 0:
            raise _bad(f"Model '{model.name}' does not say its vector length; import it again.", param)
        return configuration, model, dims

    def requested_dimensions(self, kb: KnowledgeBase) -> int | None:
        """``dimensions`` to send with embedding calls: only when the KB asked for fewer than the model's."""
        try:
            model = self.registry.get_model(kb.embedding_model_id)
        except OutcropError:
            return None
        return (
            kb.dimensions if model.embedding_dimension and kb.dimensions < model.embedding_dimension else None
        )

    def token_counter(self, model_id: str) -> Callable[[str], int]:
        """Blocking: the embedding model's tokenizer as ``text -> tokens`` (what chunk sizes count)."""
        with _TOKENIZER_LOCK:
            try:
                tokenizer = self.tokenizers.get(model_id)
            except ImportError:
                # transformers' lazy module can refuse an attribute while another thread is still
                # importing it (seen at start-up, when a resumed job loads the tokenizer at once).
                time.sleep(0.5)
                tokenizer = self.tokenizers.get(model_id)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        return count

    # -- knowledge bases -----------------------------------------------------------------

    async def create_knowledge_base(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("clientToken")
        if token:
            earlier = await asyncio.to_thread(self.kbstore.kb_by_client_token, token)
            if earlier is not None:  # a retry of a create that succeeded: answer it again
                return self.kb_wire(earlier)
        name = _check_name(body.get("name"))
        description = _check_description(body.get("description"))
        role = body.get("roleArn")
        if not isinstance(role, str) or not ROLE_ARN_RE.fullmatch(role):
            raise _bad(
                f"roleArn {str(role)[:120]!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>). Outcrop "
                "does not assume it, but keeps it as Bedrock does.",
                "roleArn",
            )
        configuration, model, dims = await asyncio.to_thread(
            self._vector_config, body.get("knowledgeBaseConfiguration")
        )
        spec = {
            "description": description,
            "roleArn": role,
            "knowledgeBaseConfiguration": configuration,
            "storageConfiguration": body.get("storageConfiguration"),
        }
        if body.get("tags") is not None and not isinstance(body["tags"], dict):
            raise _bad("'tags' must map strings to strings.", "tags")
        now = time.time()
        kb = KnowledgeBase(
            new_id(),
            name,
            KnowledgeBaseStatus.CREATING.value,
            model.id,
            dims,
            spec,
            [],
            now,
            now,
            tags=dict(body.get("tags") or {}),
        )
        await asyncio.to_thread(self.kbstore.create_kb, kb, client_token=token)
        return self.kb_wire(await self._make_table(kb))

    async def _make_table(self, kb: KnowledgeBase) -> KnowledgeBase:
        try:
            await asyncio.to_thread(self.vectors.create, kb.id, kb.dimensions)
        except Exception as exc:
            reason = f"The vector store at {self.config.knowledge_store_uri} refused the table: {exc}"[:2000]
            log.warning("knowledge base table failed", extra={"kb_id": kb.id, "reason": reason})
            await asyncio.to_thread(
                self.kbstore.set_kb_status, kb.id, KnowledgeBaseStatus.FAILED.value, [reason]
            )
        else:
            await asyncio.to_thread(self.kbstore.set_kb_status, kb.id, KnowledgeBaseStatus.ACTIVE.value)
        made = await asyncio.to_thread(self.kbstore.get_kb, kb.id)
        assert made is not None
        return made

    def get_knowledge_base(self, knowledge_base_id: str) -> dict[str, Any]:
        """The KnowledgeBase shape (incl. ``knowledgeBaseArn``); NotFoundError if there is none."""
        return self.kb_wire(self._kb(knowledge_base_id))

    def list_knowledge_bases(self, *, max_results: int | None = None, next_token: str | None = None) -> Page:
        page = _page(self.kbstore.list_kbs(), max_results, next_token)
        return Page([self.kb_summary(kb) for kb in page.items], page.next_token)

    async def update_knowledge_base(self, identifier: str, body: dict[str, Any]) -> dict[str, Any]:
        kb = await asyncio.to_thread(self._kb, identifier)
        self._usable(kb)
        name = _check_name(body.get("name"))
        description = _check_description(body.get("description"))
        role = body.get("roleArn")
        if not isinstance(role, str) or not ROLE_ARN_RE.fullmatch(role):
            raise _bad(f"roleArn {str(role)[:120]!r} is not an IAM role ARN.", "roleArn")
        configuration, model, dims = await asyncio.to_thread(
            self._vector_config, body.get("knowledgeBaseConfiguration")
        )
        if model.id != kb.embedding_model_id or dims != kb.dimensions:
            raise _bad(
                "A knowledge base's embedding model and dimensions cannot change: its vectors were made by them. "
                "Create a new knowledge base for another model.",
                "knowledgeBaseConfiguration.vectorKnowledgeBaseConfiguration",
            )
        spec = {
            **kb.spec,
            "description": description,
            "roleArn": role,
            "knowledgeBaseConfiguration": configuration,
            "storageConfiguration": body.get("storageConfiguration", kb.spec.get("storageConfiguration")),
        }
        updated = await asyncio.to_thread(
            self.kbstore.update_kb, kb.id, name=name, spec=spec, now=time.time()
        )
        if updated is None:
            raise NotFoundError("Knowledge base", kb.id)
        return self.kb_wire(updated)

    async def delete_knowledge_base(self, identifier: str) -> dict[str, Any]:
        kb = await asyncio.to_thread(self._kb, identifier)
        if kb.status != KnowledgeBaseStatus.DELETING:
            for ds in await asyncio.to_thread(self.kbstore.list_ds, kb.id):
                self._no_running_job(ds)
            await asyncio.to_thread(self.kbstore.set_kb_status, kb.id, KnowledgeBaseStatus.DELETING.value)
            self._spawn(self._finish_kb_delete(kb.id))
        return {"knowledgeBaseId": kb.id, "status": KnowledgeBaseStatus.DELETING.value}

    async def _finish_kb_delete(self, kb_id: str) -> None:
        try:
            await asyncio.to_thread(self.vectors.drop, kb_id)
            await asyncio.to_thread(self.kbstore.delete_kb, kb_id)
        except Exception:
            log.exception("knowledge base deletion failed; retried at the next start", extra={"kb_id": kb_id})

    def _no_running_job(self, ds: DataSource) -> None:
        running = self.kbstore.active_job(ds.id)
        if running is not None:
            raise ConflictError(
                f"Data source {ds.id} has ingestion job {running.id} ({running.status}). Stop it with "
                "StopIngestionJob (or wait for it to finish), then delete."
            )

    # -- data sources --------------------------------------------------------------------

    def _ds_spec(self, body: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        configuration = body.get("dataSourceConfiguration")
        if not isinstance(configuration, dict):
            raise _bad(
                "'dataSourceConfiguration' is required: {'type': 'S3', 's3Configuration': {'bucketArn': ...}}.",
                "dataSourceConfiguration",
            )
        check_source(configuration, self.config)
        policy = body.get("dataDeletionPolicy") or (previous or {}).get("dataDeletionPolicy") or "DELETE"
        if policy not in DELETION_POLICIES:
            raise _bad(f"dataDeletionPolicy is {policy!r}; use DELETE or RETAIN.", "dataDeletionPolicy")
        ingestion = body.get("vectorIngestionConfiguration")
        if ingestion is not None:
            if not isinstance(ingestion, dict):
                raise _bad("vectorIngestionConfiguration must be an object.", "vectorIngestionConfiguration")
            for key in ingestion:
                if key != "chunkingConfiguration":
                    raise _bad(
                        f"vectorIngestionConfiguration.{key} is not supported by Outcrop: documents are parsed by "
                        "its own parsers (txt, md, html, csv, pdf, docx). Remove it; chunkingConfiguration is "
                        "supported.",
                        f"vectorIngestionConfiguration.{key}",
                    )
            validate_chunking(ingestion.get("chunkingConfiguration"))
        if previous is not None:
            before = (previous.get("vectorIngestionConfiguration") or {}).get("chunkingConfiguration")
            after = (ingestion or {}).get("chunkingConfiguration")
            if ingestion is not None and before != after:
                raise _bad(
                    "A data source's chunkingConfiguration cannot change after it is created (as on Bedrock): its "
                    "chunks were cut by it. Create a new data source for another chunking.",
                    "vectorIngestionConfiguration.chunkingConfiguration",
                )
            if ingestion is None:
                ingestion = previous.get("vectorIngestionConfiguration")
        return {
            "description": _check_description(body.get("description")),
            "dataSourceConfiguration": configuration,
            "dataDeletionPolicy": policy,
            "vectorIngestionConfiguration": ingestion,
            "serverSideEncryptionConfiguration": body.get("serverSideEncryptionConfiguration"),
        }

    async def create_data_source(self, identifier: str, body: dict[str, Any]) -> dict[str, Any]:
        kb = await asyncio.to_thread(self._kb, identifier)
        token = body.get("clientToken")
        if token:
            earlier = await asyncio.to_thread(self.kbstore.ds_by_client_token, kb.id, token)
            if earlier is not None:
                return self.ds_wire(earlier)
        self._usable(kb)
        name = _check_name(body.get("name"))
        spec = await asyncio.to_thread(self._ds_spec, body)
        now = time.time()
        ds = DataSource(new_id(), kb.id, name, DataSourceStatus.AVAILABLE.value, spec, [], now, now)
        await asyncio.to_thread(self.kbstore.create_ds, ds, client_token=token)
        return self.ds_wire(ds)

    def get_data_source(self, kb_id: str, ds_id: str) -> dict[str, Any]:
        return self.ds_wire(self._ds(kb_id, ds_id))

    def list_data_sources(
        self, kb_id: str, *, max_results: int | None = None, next_token: str | None = None
    ) -> Page:
        kb = self._kb(kb_id)
        page = _page(self.kbstore.list_ds(kb.id), max_results, next_token)
        return Page([self.ds_summary(ds) for ds in page.items], page.next_token)

    async def update_data_source(self, kb_id: str, ds_id: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = await asyncio.to_thread(self._ds, kb_id, ds_id)
        if ds.status == DataSourceStatus.DELETING:
            raise ConflictError(f"Data source {ds.id} is being deleted; it cannot change.")
        name = _check_name(body.get("name"))
        spec = await asyncio.to_thread(self._ds_spec, body, ds.spec)
        updated = await asyncio.to_thread(
            self.kbstore.update_ds, ds.knowledge_base_id, ds.id, name=name, spec=spec, now=time.time()
        )
        if updated is None:
            raise NotFoundError("Data source", ds.id)
        return self.ds_wire(updated)

    async def delete_data_source(self, kb_id: str, ds_id: str) -> dict[str, Any]:
        ds = await asyncio.to_thread(self._ds, kb_id, ds_id)
        if ds.status != DataSourceStatus.DELETING:
            await asyncio.to_thread(self._no_running_job, ds)
            await asyncio.to_thread(self.kbstore.set_ds_status, ds.id, DataSourceStatus.DELETING.value)
            self._spawn(self._finish_ds_delete(ds))
        return {
            "knowledgeBaseId": ds.knowledge_base_id,
            "dataSourceId": ds.id,
            "status": DataSourceStatus.DELETING.value,
        }

    async def _finish_ds_delete(self, ds: DataSource) -> None:
        try:
            if ds.spec.get("dataDeletionPolicy", "DELETE") == "DELETE":
                await asyncio.to_thread(self.vectors.delete_data_source, ds.knowledge_base_id, ds.id)
            await asyncio.to_thread(self.kbstore.delete_ds, ds.id)
        except Exception:
            log.exception("data source deletion failed; retried at the next start", extra={"ds_id": ds.id})

    # -- ingestion jobs ------------------------------------------------------------------

    async def start_ingestion_job(self, kb_id: str, ds_id: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = await asyncio.to_thread(self._ds, kb_id, ds_id)
        kb = await asyncio.to_thread(self._kb, kb_id)
        self._usable(kb)
        if ds.status == DataSourceStatus.DELETING:
            raise ConflictError(f"Data source {ds.id} is being deleted; it cannot be synced.")
        now = time.time()
        job = IngestionJob(
            new_id(),
            kb.id,
            ds.id,
            _check_description(body.get("description")),
            IngestionJobStatus.STARTING.value,
            empty_statistics(),
            [],
            now,
            now,
        )
        made = await asyncio.to_thread(self.kbstore.create_job, job, client_token=body.get("clientToken"))
        if self.runner is not None:
            self.runner.wake()
        return self.job_wire(made)

    def _job(self, kb_id: str, ds_id: str, job_id: str) -> IngestionJob:
        ds = self._ds(kb_id, ds_id)
        self._check_id(job_id, "ingestionJobId")
        job = self.kbstore.get_job(job_id)
        if job is None or job.data_source_id != ds.id:
            raise NotFoundError(
                "Ingestion job",
                job_id,
                f"ListIngestionJobs with knowledgeBaseId={ds.knowledge_base_id} and dataSourceId={ds.id} shows them.",
            )
        return job

    def get_ingestion_job(self, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        return self.job_wire(self._job(kb_id, ds_id, job_id))

    def list_ingestion_jobs(
        self,
        kb_id: str,
        ds_id: str,
        *,
        filters: list[dict[str, Any]] | None = None,
        sort_by: dict[str, Any] | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> Page:
        ds = self._ds(kb_id, ds_id)
        jobs = self.kbstore.list_jobs(ds.id)
        for f in filters or []:
            values = f.get("values")
            if f.get("attribute") != "STATUS" or f.get("operator") != "EQ" or not isinstance(values, list):
                raise _bad("filters take attribute STATUS with operator EQ and a list of values.", "filters")
            wanted = {v for v in values if isinstance(v, str)}
            jobs = [j for j in jobs if j.status in wanted]
        attribute = (sort_by or {}).get("attribute", "STARTED_AT")
        order = (sort_by or {}).get("order", "DESCENDING")
        if attribute not in ("STATUS", "STARTED_AT") or order not in ("ASCENDING", "DESCENDING"):
            raise _bad(
                "sortBy takes attribute STATUS or STARTED_AT and order ASCENDING or DESCENDING.", "sortBy"
            )
        jobs.sort(
            key=(lambda j: (j.status, j.started_at))
            if attribute == "STATUS"
            else (lambda j: (j.started_at, j.id)),
            reverse=order == "DESCENDING",
        )
        page = _page(jobs, max_results, next_token)
        return Page([self.job_wire(j, summary=True) for j in page.items], page.next_token)

    async def stop_ingestion_job(self, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        job = await asyncio.to_thread(self._job, kb_id, ds_id, job_id)
        if IngestionJobStatus(job.status).is_terminal():
            raise ConflictError(
                f"Ingestion job {job.id} has already finished ({job.status}); there is nothing to stop."
            )
        stopped = await asyncio.to_thread(self.kbstore.request_stop, job.id)
        assert stopped is not None
        return self.job_wire(stopped)

    # -- retrieval -----------------------------------------------------------------------

    async def retrieve(
        self,
        knowledge_base_id: str,
        text: str,
        *,
        number_of_results: int = DEFAULT_NUMBER_OF_RESULTS,
        search_type: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Bedrock ``KnowledgeBaseRetrievalResult`` dicts, best first. NotFoundError for an unknown
        knowledge base; InvalidRequestError for a bad filter, search type or count."""
        if not isinstance(text, str) or not text.strip():
            raise _bad(
                "retrievalQuery.text is empty; send the question to search for.", "retrievalQuery.text"
            )
        if not isinstance(number_of_results, int) or not 1 <= number_of_results <= MAX_NUMBER_OF_RESULTS:
            raise _bad(
                f"numberOfResults is {number_of_results!r}; it must be 1-{MAX_NUMBER_OF_RESULTS}.",
                "vectorSearchConfiguration.numberOfResults",
            )
        kind: SearchType = "SEMANTIC"
        if search_type is not None:
            if search_type not in SEARCH_TYPES:
                raise _bad(
                    f"overrideSearchType is {search_type!r}; use HYBRID or SEMANTIC.",
                    "vectorSearchConfiguration.overrideSearchType",
                )
            kind = "HYBRID" if search_type == "HYBRID" else "SEMANTIC"
        if filter is not None:
            from outcrop.knowledge.filters import to_sql

            to_sql(filter)  # a bad filter is a ValidationException before the model is called
        kb = await asyncio.to_thread(self._kb, knowledge_base_id)
        self._usable(kb)
        model = await asyncio.to_thread(self.registry.get_model, kb.embedding_model_id)
        dims = (
            kb.dimensions if model.embedding_dimension and kb.dimensions < model.embedding_dimension else None
        )
        [vector] = await self.embedder.embed(model.name, [text], dimensions=dims, priority=Priority.ONLINE)
        hits = await asyncio.to_thread(
            self.vectors.search,
            kb.id,
            vector=vector,
            text=text,
            k=number_of_results,
            filter=filter,
            search_type=kind,
        )
        return [
            {
                "content": {"text": hit.text, "type": "TEXT"},
                "location": {"type": "S3", "s3Location": {"uri": hit.source_uri}},
                "metadata": dict(hit.metadata),
                "score": float(hit.score),
            }
            for hit in hits
        ]
