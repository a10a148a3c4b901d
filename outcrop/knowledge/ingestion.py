"""Ingestion jobs: scan a data source, diff it by content hash, parse, chunk, embed, write.

Every server runs one :class:`IngestionRunner` on its event loop. Jobs are queued (STARTING) in
the metadata store and claimed like batch jobs: the runner holds a lease (``claimed_by`` +
``heartbeat_at``, renewed every third of ``store.job_lease_seconds``); a server that dies leaves
a lease that runs out, and the next runner (this server restarted, or another sharing the store)
claims the job and resumes it.

One job (:class:`IngestionJobRun`):

1. lists the source's documents and sidecars (statistics ``numberOfDocumentsScanned`` and
   ``numberOfMetadataDocumentsScanned``);
2. compares each document's content hash (and its sidecar's) with ``kb_documents``: new,
   modified, metadata-only modified or unchanged; documents recorded but gone are deleted from
   the vector store and counted in ``numberOfDocumentsDeleted``;
3. reads and parses the changed ones in a worker thread, chunks them with the data source's
   ``chunkingConfiguration`` (token counts from the embedding model's own tokenizer), and
   gathers them into groups of about ``embedding_batch_size x embedding_concurrency`` chunks;
4. embeds a group through the router (:class:`Embedder`: ``Priority.BATCH``, at most
   ``embedding_concurrency`` calls in flight per server, backoff and retry on throttling, a cold
   copy or a full queue), so ingestion takes spare capacity and never starves online requests;
5. writes the group's chunks to the vector store (chunk ids are stable: ``sha256(data source,
   document URI, chunk index)``, so writing a chunk twice replaces it), then records the group's
   documents and statistics in one transaction (:meth:`KBStore.record`). Groups are written one
   at a time, apart from embedding: a group frees its embedding slot once its vectors are back,
   so the next groups embed while it is written (the embedder never waits on LanceDB).

A ``kill -9`` anywhere leaves the store consistent: a document's chunks are written before it
is recorded, so a resumed job finds the unrecorded ones changed and writes them again under the
same ids (after deleting whatever an earlier attempt left for them), and a recorded one is
never counted twice. Documents that fail to parse are counted in ``numberOfDocumentsFailed`` and
named in ``failureReasons`` while the rest are indexed. StopIngestionJob makes the job STOPPING:
in-flight groups finish and are recorded, then STOPPED.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outcrop.config import OutcropConfig
from outcrop.envs import worker_id_hint
from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.knowledge.chunking import ChunkPiece, chunk_semantic, chunk_text
from outcrop.knowledge.kbstore import (
    DataSource,
    DocumentRecord,
    DocumentState,
    Failed,
    Indexed,
    IngestionJob,
    IngestionJobStatus,
    KBStore,
    KnowledgeBase,
)
from outcrop.knowledge.sources import DocumentSource, Loaded, SourceDocument, open_source
from outcrop.knowledge.types import Chunk, MetadataValue
from outcrop.serving.router import ColdStartPolicy
from outcrop.serving.routing import EMBEDDINGS_PATH, Priority
from outcrop.wakeup import set_event

if TYPE_CHECKING:
    from outcrop.knowledge.service import KnowledgeService

log = logging.getLogger("outcrop.knowledge")
S = IngestionJobStatus

# Documents per group at most (a group is one vector-store write and one store transaction).
MAX_GROUP_DOCUMENTS = 64
# Groups being embedded at once per job beyond the one being prepared: the next group's
# documents are parsed while the previous one is embedded, so the embedder never waits on parsing.
GROUPS_IN_FLIGHT = 2
# Groups embedded and waiting for their vector-store write and record, beyond those being embedded.
# Writes run one at a time, apart from embedding: a group hands its embedding slot on as soon as its
# vectors are back, so a slow write (merge_insert, or an index fold every ~1,000 rows) never leaves
# the embedder without the next group; the cap bounds the vectors held in memory.
GROUPS_AWAITING_WRITE = 4
# Why 10: a server restart or two during a long sync is normal (each resumes the job); a job that
# has taken its server down ten times is the job, and retrying it every lease helps no one.
MAX_CLAIMS = 10
# How long stop() lets running jobs record what they finished before handing their claims back.
STOP_GRACE_SECONDS = 5.0
NEW = "numberOfNewDocumentsIndexed"
MODIFIED = "numberOfModifiedDocumentsIndexed"
METADATA_MODIFIED = "numberOfMetadataDocumentsModified"


def chunk_id(data_source_id: str, uri: str, index: int) -> str:
    """Stable for (data source, document, index): re-writing a chunk replaces it."""
    return hashlib.sha256(f"{data_source_id}\0{uri}\0{index}".encode()).hexdigest()[:32]


class Embedder:
    """Embedding calls through the router, as every other client of the embedding copies: bounded
    concurrency per server, ``Priority.BATCH`` for ingestion, backoff on retryable errors."""

    def __init__(self, config: OutcropConfig, serving: Any) -> None:
        self.settings = config.knowledge
        self.serving = serving
        self.cold_start = ColdStartPolicy(
            wait=True, max_wait_seconds=config.serving.cold_start_max_wait_seconds
        )
        self._slots = asyncio.Semaphore(self.settings.embedding_concurrency)
        self.calls = 0  # embedding calls made (for the console and tests)
        self.retries = 0

    async def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        dimensions: int | None = None,
        priority: Priority = Priority.BATCH,
    ) -> list[list[float]]:
        body: dict[str, Any] = {"input": list(texts), "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        attempts = self.settings.embedding_max_attempts
        pause = self.settings.embedding_backoff_seconds
        for attempt in range(1, attempts + 1):
            try:
                if priority == Priority.ONLINE:  # a query: never queued behind ingestion's own slots
                    resp = await self.serving.post(
                        model, EMBEDDINGS_PATH, body, cold_start=self.cold_start, priority=priority
                    )
                else:
                    async with self._slots:
                        resp = await self.serving.post(
                            model, EMBEDDINGS_PATH, body, cold_start=self.cold_start, priority=priority
                        )
                self.calls += 1
                data = sorted(resp.get("data") or [], key=lambda d: int(d.get("index", 0)))
                vectors = [[float(x) for x in d["embedding"]] for d in data]
                if len(vectors) != len(texts):
                    raise InvalidRequestError(
                        f"The embedding model answered {len(vectors)} vectors for {len(texts)} texts."
                    )
                return vectors
            except OutcropError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                self.retries += 1
                wait = max(float(getattr(exc, "retry_after_seconds", 0) or 0), pause)
                await asyncio.sleep(min(wait, self.settings.embedding_max_backoff_seconds))
                pause = min(pause * 2, self.settings.embedding_max_backoff_seconds)
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class _Prepared:
    doc: SourceDocument
    loaded: Loaded
    change: str
    pieces: list[ChunkPiece] = field(default_factory=list)


class _LostClaim(Exception):
    """Another server took the job over; stop quietly (it resumes the job)."""


class _JobFailed(Exception):
    """The job itself cannot go on (source unreadable, model gone): FAILED with this reason."""


class IngestionJobRun:
    """One claimed job, from scan to a terminal status."""

    def __init__(
        self,
        service: KnowledgeService,
        job: IngestionJob,
        worker: str,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.service = service
        self.store: KBStore = service.kbstore
        self.settings = service.config.knowledge
        self.job = job
        self.worker = worker
        self.stopping = job.status == S.STOPPING
        self.resumed = job.attempts > 1  # an earlier attempt may have written chunks it never recorded
        self.on_progress = on_progress
        self._groups: set[asyncio.Task[None]] = set()
        self._group_slots = asyncio.Semaphore(GROUPS_IN_FLIGHT)  # groups being embedded
        self._pending = asyncio.Semaphore(GROUPS_IN_FLIGHT + GROUPS_AWAITING_WRITE)  # embedded, not written
        self._writer = asyncio.Lock()  # one group writes and records at a time
        self._failure: BaseException | None = None

    # -- the job -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            kb, ds = self._load()
            model_name = await self._model(kb)
            source = open_source(ds.spec["dataSourceConfiguration"], self.service.config)
            docs, sidecars = await asyncio.to_thread(source.list_documents)
            self._check(
                await asyncio.to_thread(
                    self.store.set_scanned,
                    self.job.id,
                    self.worker,
                    documents=len(docs),
                    metadata_documents=sidecars,
                )
            )
            recorded = await asyncio.to_thread(self.store.documents, ds.id)
            await self._delete_gone(kb, ds, docs, recorded)
            await self._index(kb, ds, source, model_name, docs, recorded)
        except asyncio.CancelledError:
            for task in list(self._groups):
                task.cancel()
            raise
        except _LostClaim:
            log.info("ingestion job taken over by another server", extra={"job_id": self.job.id})
            return
        except (_JobFailed, OutcropError) as exc:
            reason = str(exc) if isinstance(exc, _JobFailed) else exc.message
            await asyncio.to_thread(self.store.finish, self.job.id, self.worker, S.FAILED, reason)
            log.warning("ingestion job failed", extra={"job_id": self.job.id, "reason": reason[:300]})
            return
        final = S.STOPPED if self.stopping else S.COMPLETE
        await asyncio.to_thread(self.store.finish, self.job.id, self.worker, final)
        log.info("ingestion job finished", extra={"job_id": self.job.id, "status": final.value})

    def _load(self) -> tuple[KnowledgeBase, DataSource]:
        kb = self.store.get_kb(self.job.knowledge_base_id)
        ds = self.store.get_ds(self.job.knowledge_base_id, self.job.data_source_id)
        if kb is None or ds is None or kb.status == "DELETING" or ds.status == "DELETING":
            raise _JobFailed("The knowledge base or data source of this job is being deleted.")
        return kb, ds

    async def _model(self, kb: KnowledgeBase) -> str:
        try:
            model = await asyncio.to_thread(self.service.registry.get_model, kb.embedding_model_id)
        except OutcropError:
            raise _JobFailed(
                f"The knowledge base's embedding model ({kb.embedding_model_id}) no longer exists. Import it "
                "again and create a knowledge base that uses it."
            ) from None
        return model.name

    def _check(self, status: str | None) -> None:
        if status is None:
            raise _LostClaim
        if status == S.STOPPING:
            self.stopping = True

    async def _delete_gone(
        self,
        kb: KnowledgeBase,
        ds: DataSource,
        docs: list[SourceDocument],
        recorded: dict[str, DocumentRecord],
    ) -> None:
        present = {d.uri for d in docs}
        gone = [r for uri, r in recorded.items() if uri not in present]
        indexed = [r.uri for r in gone if r.status == DocumentState.INDEXED]
        forgotten = [r.uri for r in gone if r.status != DocumentState.INDEXED]
        for start in range(0, len(gone), 500):
            part = indexed[start : start + 500]
            if part:
                await asyncio.to_thread(self.service.vectors.delete_documents, kb.id, ds.id, part)
        if gone:
            await self._record(kb, ds, deleted=indexed, forgotten=forgotten)

    async def _record(
        self,
        kb: KnowledgeBase,
        ds: DataSource,
        *,
        indexed: Sequence[Indexed] = (),
        failed: Sequence[Failed] = (),
        deleted: Sequence[str] = (),
        forgotten: Sequence[str] = (),
    ) -> None:
        """Record documents and statistics in one transaction (:meth:`KBStore.record`); stop
        quietly if another server has taken the job over."""
        status = await asyncio.to_thread(
            functools.partial(
                self.store.record,
                self.job.id,
                self.worker,
                knowledge_base_id=kb.id,
                data_source_id=ds.id,
                indexed=indexed,
                failed=failed,
                deleted=deleted,
                forgotten=forgotten,
            )
        )
        self._check(status)

    # -- indexing ------------------------------------------------------------------------

    def _change(
        self, doc: SourceDocument, hashes: tuple[str, str | None], before: DocumentRecord | None
    ) -> str | None:
        """Which statistic the document counts in, or None if there is nothing to do."""
        content, metadata = hashes
        if before is None:
            return NEW
        same = before.content_hash == content and before.metadata_hash == metadata
        if before.status == DocumentState.FAILED:
            if same and before.job_id == self.job.id:
                return None  # failed in an earlier attempt of this job: already counted
            return NEW
        if same:
            return None
        return MODIFIED if before.content_hash != content else METADATA_MODIFIED

    def _prepare(
        self,
        source: DocumentSource,
        doc: SourceDocument,
        before: DocumentRecord | None,
        chunking: dict[str, Any] | None,
        count_tokens: Callable[[str], int],
    ) -> _Prepared | None:
        """Blocking (a worker thread): hash, diff, read, parse and chunk one document."""
        change = self._change(doc, source.hashes(doc), before)
        if change is None:
            return None
        loaded = source.load(doc, self.settings.max_document_bytes)
        prepared = _Prepared(doc, loaded, change)
        if loaded.parsed is not None and (chunking or {}).get("chunkingStrategy") != "SEMANTIC":
            try:
                prepared.pieces = chunk_text(loaded.parsed.text, chunking, count_tokens)
            except OutcropError as exc:
                prepared.loaded = Loaded(loaded.content_hash, loaded.metadata_hash, error=exc.message)
        return prepared

    async def _index(
        self,
        kb: KnowledgeBase,
        ds: DataSource,
        source: DocumentSource,
        model_name: str,
        docs: list[SourceDocument],
        recorded: dict[str, DocumentRecord],
    ) -> None:
        chunking = (ds.spec.get("vectorIngestionConfiguration") or {}).get("chunkingConfiguration")
        count_tokens = await asyncio.to_thread(self.service.token_counter, kb.embedding_model_id)
        dims = self.service.requested_dimensions(kb)

        async def embed(texts: list[str]) -> list[list[float]]:
            return await self.service.embedder.embed(model_name, texts, dimensions=dims)

        target_chunks = self.settings.embedding_batch_size * self.settings.embedding_concurrency
        group: list[_Prepared] = []
        chunks_in_group = 0
        for doc in docs:
            if self.stopping or self._failure is not None:
                break
            prepared = await asyncio.to_thread(
                self._prepare, source, doc, recorded.get(doc.uri), chunking, count_tokens
            )
            if prepared is None:
                continue
            if (
                prepared.loaded.parsed is not None
                and not prepared.pieces
                and (chunking or {}).get("chunkingStrategy") == "SEMANTIC"
            ):
                try:
                    prepared.pieces = await chunk_semantic(
                        prepared.loaded.parsed.text, chunking, count_tokens, embed
                    )
                except OutcropError as exc:
                    if exc.retryable:
                        raise
                    prepared.loaded = Loaded(
                        prepared.loaded.content_hash, prepared.loaded.metadata_hash, error=exc.message
                    )
            group.append(prepared)
            chunks_in_group += len(prepared.pieces)
            if chunks_in_group >= target_chunks or len(group) >= MAX_GROUP_DOCUMENTS:
                await self._dispatch(kb, ds, group, embed)
                group, chunks_in_group = [], 0
        if group and self._failure is None:
            await self._dispatch(kb, ds, group, embed)
        if self._groups:
            await asyncio.gather(*self._groups, return_exceptions=True)
        if self._failure is not None:
            raise self._failure

    async def _dispatch(
        self,
        kb: KnowledgeBase,
        ds: DataSource,
        group: list[_Prepared],
        embed: Callable[[list[str]], Any],
    ) -> None:
        await self._pending.acquire()
        await self._group_slots.acquire()
        if self._failure is not None:
            self._group_slots.release()
            self._pending.release()
            raise self._failure

        async def run() -> None:
            try:
                try:
                    embedded = await self._embed_group(ds, group, embed)
                finally:
                    self._group_slots.release()  # the next group starts embedding while this one is written
                async with self._writer:
                    if self._failure is None:  # a failed job writes nothing more (a resumed one redoes it)
                        await self._write_group(kb, ds, *embedded)
            except BaseException as exc:  # the job stops taking new documents and fails (or stops) with it
                if self._failure is None:
                    self._failure = exc
            finally:
                self._pending.release()

        task = asyncio.create_task(run())
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _embed_group(
        self, ds: DataSource, group: list[_Prepared], embed: Callable[[list[str]], Any]
    ) -> tuple[list[_Prepared], list[Failed], list[Chunk]]:
        """The group's chunks with their vectors, and the documents that failed (to parse or embed)."""
        ok = [p for p in group if p.loaded.error is None]
        failed = [
            Failed(p.doc.uri, p.loaded.content_hash, p.loaded.metadata_hash, f"{p.doc.uri}: {p.loaded.error}")
            for p in group
            if p.loaded.error is not None
        ]
        texts = [piece.text for p in ok for piece in p.pieces]
        batch = self.settings.embedding_batch_size
        try:
            parts = await asyncio.gather(*(embed(texts[i : i + batch]) for i in range(0, len(texts), batch)))
        except OutcropError as exc:
            if exc.retryable:
                raise _JobFailed(
                    f"The embedding model did not answer after {self.settings.embedding_max_attempts} tries: "
                    f"{exc.message}"
                ) from None
            # The model refused these texts (too long for it, say): these documents fail, the rest go on.
            failed += [
                Failed(
                    p.doc.uri,
                    p.loaded.content_hash,
                    p.loaded.metadata_hash,
                    f"{p.doc.uri}: could not be embedded: {exc.message}",
                )
                for p in ok
            ]
            ok, parts = [], []
        vectors = [v for part in parts for v in part]
        chunks: list[Chunk] = []
        position = 0
        for p in ok:
            metadata: dict[str, MetadataValue] = dict(p.loaded.metadata or {})
            for index, piece in enumerate(p.pieces):
                chunks.append(
                    Chunk(
                        chunk_id=chunk_id(ds.id, p.doc.uri, index),
                        data_source_id=ds.id,
                        source_uri=p.doc.uri,
                        text=piece.text,
                        vector=vectors[position],
                        metadata=metadata,
                        parent_text=piece.parent_text,
                    )
                )
                position += 1
        return ok, failed, chunks

    async def _write_group(
        self,
        kb: KnowledgeBase,
        ds: DataSource,
        ok: list[_Prepared],
        failed: list[Failed],
        chunks: list[Chunk],
    ) -> None:
        """Write a group's chunks to the vector store, then record its documents (in that order: a
        kill between the two leaves documents unrecorded, and the resumed job writes them again)."""
        # What an earlier version (or an earlier attempt of this job) wrote for these documents goes first.
        stale = [p.doc.uri for p in ok if p.change != NEW or self.resumed]
        vectors_store = self.service.vectors
        if stale:
            await asyncio.to_thread(vectors_store.delete_documents, kb.id, ds.id, stale)
        if chunks:
            await asyncio.to_thread(vectors_store.upsert, kb.id, chunks)
        indexed = [
            Indexed(p.doc.uri, p.loaded.content_hash, p.loaded.metadata_hash, len(p.pieces), p.change)
            for p in ok
        ]
        await self._record(kb, ds, indexed=indexed, failed=failed)
        if self.on_progress is not None:
            self.on_progress()


class IngestionRunner:
    """Claims queued and abandoned ingestion jobs and runs up to ``knowledge.max_running_jobs`` of them."""

    def __init__(self, service: KnowledgeService, *, worker_id: str | None = None) -> None:
        self.service = service
        self.store = service.kbstore
        self.settings = service.config.knowledge
        self.lease_seconds = service.config.store.job_lease_seconds
        self.worker_id = worker_id or worker_id_hint()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._main = asyncio.create_task(self._main_loop(), name="outcrop-ingestion-runner")

    def wake(self) -> None:
        set_event(self._loop, self._wake)

    async def stop(self) -> None:
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._main
        held = list(self._jobs)
        tasks = list(self._jobs.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
        for job_id in held:  # a clean stop hands the claims back: the next server resumes at once
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.heartbeat, job_id, self.worker_id, release=True)
        self._jobs.clear()

    def running(self) -> list[str]:
        return list(self._jobs)

    async def _main_loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self._claim_work()
            except Exception:
                log.exception("ingestion runner round failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _claim_work(self) -> None:
        free = self.settings.max_running_jobs - len(self._jobs)
        if free <= 0:
            return
        for job in await asyncio.to_thread(self.store.claimable_jobs, self.lease_seconds):
            if free <= 0:
                break
            if job.id in self._jobs:
                continue
            claimed = await asyncio.to_thread(self.store.claim, job.id, self.worker_id, self.lease_seconds)
            if claimed is None:
                continue
            if claimed.attempts > MAX_CLAIMS:
                await asyncio.to_thread(
                    self.store.finish,
                    job.id,
                    self.worker_id,
                    S.FAILED,
                    f"The job was interrupted {claimed.attempts - 1} times (its server stopped or died while it "
                    "ran); see the server logs, then start a new ingestion job (finished documents are kept).",
                )
                continue
            free -= 1
            self._jobs[job.id] = asyncio.create_task(self._run(claimed), name=f"outcrop-ingestion-{job.id}")

    async def _run(self, job: IngestionJob) -> None:
        beat = asyncio.create_task(self._heartbeat(job.id))
        try:
            await IngestionJobRun(self.service, job, self.worker_id).run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the job fails with a reason rather than hanging IN_PROGRESS
            log.exception("ingestion job crashed", extra={"job_id": job.id})
            await asyncio.to_thread(
                self.store.finish,
                job.id,
                self.worker_id,
                S.FAILED,
                f"Internal error while ingesting ({type(exc).__name__}); see the server log.",
            )
        finally:
            beat.cancel()
            self._jobs.pop(job.id, None)
            self.wake()

    async def _heartbeat(self, job_id: str) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.store.heartbeat, job_id, self.worker_id)
            except Exception:
                log.warning("ingestion heartbeat failed", extra={"job_id": job_id})
