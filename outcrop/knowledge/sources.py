"""Where a data source's documents are: an S3-type data source on a local folder or a bucket.

Bedrock's data source names a bucket (``s3Configuration.bucketArn``, ``arn:aws:s3:::bucket``) and
at most one ``inclusionPrefixes`` entry. Outcrop reads it as:

- ``arn:aws:s3:::bucket`` or ``s3://bucket[/prefix]``: that bucket on the S3 endpoint of the
  ``s3`` config section (AWS or any S3-compatible server), as imports and batch jobs read it;
- ``file:///absolute/folder`` or ``/absolute/folder``: a folder on the server, which must lie
  inside the registry's allowed roots (``registry.allowed_roots``), as imports do.

``inclusionPrefixes[0]`` narrows it to keys (or relative paths) that start with the prefix.
Every file is a document but the ``<document>.metadata.json`` sidecars (read with the document)
and hidden files (a part starting with ``.``). A document's URI, as Retrieve and the reserved
metadata key ``x-amz-bedrock-kb-source-uri`` show it, is ``s3://bucket/key`` or
``file:///absolute/path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.knowledge.metadata import SIDECAR_SUFFIX, is_sidecar, parse_sidecar, read_sidecar
from outcrop.knowledge.parsing import DocumentParseError, ParsedDocument, parse_document
from outcrop.knowledge.types import MetadataValue
from outcrop.registry.sources import resolve_within_roots, s3_client

BUCKET_PARAM = "dataSourceConfiguration.s3Configuration.bucketArn"
PREFIX_PARAM = "dataSourceConfiguration.s3Configuration.inclusionPrefixes"
_BUCKET_ARN_PREFIX = "arn:aws:s3:::"
# Read size while hashing a local document.
_READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SourceDocument:
    uri: str  # as Retrieve shows it: s3://bucket/key or file:///path
    key: str  # the local path or the S3 key
    size_bytes: int
    sidecar: str | None  # the local path or S3 key of its .metadata.json, if there is one
    etag: str | None = None  # S3: the object's ETag (its content hash, for the incremental diff)
    problem: str | None = None  # why it must not be read (a link that leaves the allowed roots)


@dataclass(frozen=True)
class Loaded:
    """One document read from its source: its text, metadata and the hashes the diff compares."""

    content_hash: str
    metadata_hash: str | None
    parsed: ParsedDocument | None = None
    metadata: dict[str, MetadataValue] | None = None
    error: str | None = None  # why it cannot be indexed (parsing, metadata, size)


class DocumentSource:
    """The documents of one data source (blocking calls: run them in a thread)."""

    def __init__(
        self, config: OutcropConfig, *, path: Path | None = None, bucket: str | None = None, prefix: str = ""
    ) -> None:
        self.config = config
        self.path = path
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = None

    @property
    def uri(self) -> str:
        if self.bucket is not None:
            return f"s3://{self.bucket}/{self.prefix}"
        assert self.path is not None
        return self.path.as_uri() + ("/" + self.prefix if self.prefix else "")

    def _s3(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.config)
        return self._client

    # -- listing -------------------------------------------------------------------------

    def list_documents(self) -> tuple[list[SourceDocument], int]:
        """Every document (sorted by URI) and how many metadata sidecars there are."""
        if self.bucket is not None:
            return self._list_s3()
        return self._list_local()

    def _list_local(self) -> tuple[list[SourceDocument], int]:
        assert self.path is not None
        root = self.path
        if not root.is_dir():
            raise InvalidRequestError(
                f"{root}: no such folder on the server. Create it (or fix the data source's bucketArn) and sync again."
            )
        files: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                if self.prefix and not rel.startswith(self.prefix):
                    continue
                if full.is_file():
                    files[rel] = full
        sidecars = {rel for rel in files if is_sidecar(rel)}
        roots = self.config.import_roots()
        folder = root.resolve()

        def inside(p: Path) -> bool:
            target = p.resolve()
            return any(target == r or r in target.parents for r in roots)

        docs: list[SourceDocument] = []
        for rel, path in files.items():
            if rel in sidecars:
                continue
            problem = None
            if not inside(path):
                # A symbolic link out of the allowed roots: never read (the roots are the boundary).
                problem = (
                    f"{rel} links to {path.resolve()}, outside the folders this server may read; copy the file into the "
                    "data source's folder instead."
                )
            sidecar = files.get(rel + SIDECAR_SUFFIX)
            if sidecar is not None and not inside(sidecar):
                problem = problem or f"{rel}{SIDECAR_SUFFIX} links outside the folders this server may read."
            docs.append(
                SourceDocument(
                    uri=(folder / rel).as_uri(),
                    key=str(path),
                    size_bytes=path.stat().st_size if problem is None else 0,
                    sidecar=str(sidecar) if sidecar is not None else None,
                    problem=problem,
                )
            )
        return sorted(docs, key=lambda d: d.uri), len(sidecars)

    def _list_s3(self) -> tuple[list[SourceDocument], int]:
        from botocore.exceptions import BotoCoreError, ClientError

        objects: dict[str, dict[str, Any]] = {}
        try:
            paginator = self._s3().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    parts = PurePosixPath(key).parts
                    if key.endswith("/") or any(p.startswith(".") or p == ".." for p in parts):
                        continue
                    objects[key] = obj
        except (ClientError, BotoCoreError) as exc:
            raise InvalidRequestError(
                f"s3://{self.bucket}/{self.prefix}: cannot list the objects: {exc}. Check the bucket, the prefix "
                "and the S3 endpoint/credentials (OUTCROP_S3__*)."
            ) from None
        sidecars = {k for k in objects if is_sidecar(k)}
        docs = [
            SourceDocument(
                uri=f"s3://{self.bucket}/{key}",
                key=key,
                size_bytes=int(obj["Size"]),
                sidecar=key + SIDECAR_SUFFIX if key + SIDECAR_SUFFIX in objects else None,
                etag=str(obj.get("ETag", "")).strip('"') or None,
            )
            for key, obj in objects.items()
            if key not in sidecars
        ]
        return sorted(docs, key=lambda d: d.uri), len(sidecars)

    # -- reading -------------------------------------------------------------------------

    def _read(self, key: str) -> bytes:
        if self.bucket is not None:
            body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        return Path(key).read_bytes()

    def hashes(self, doc: SourceDocument) -> tuple[str, str | None]:
        """The content hash of the document and of its sidecar, without parsing anything."""
        if doc.problem is not None:
            return "unreadable:" + hashlib.sha256(doc.problem.encode()).hexdigest(), None
        if doc.etag is not None:
            content = f"etag:{doc.etag}"
        else:
            digest = hashlib.sha256()
            with open(doc.key, "rb") as f:
                while chunk := f.read(_READ_BYTES):
                    digest.update(chunk)
            content = digest.hexdigest()
        metadata = None
        if doc.sidecar is not None:
            metadata = hashlib.sha256(self._read(doc.sidecar)).hexdigest()
        return content, metadata

    def load(self, doc: SourceDocument, max_bytes: int) -> Loaded:
        """Read, hash and parse one document and its sidecar; a problem becomes ``error`` (one sentence)."""
        name = PurePosixPath(doc.key).name
        content_hash, metadata_hash = self.hashes(doc)
        if doc.problem is not None:
            return Loaded(content_hash, metadata_hash, error=doc.problem)
        if doc.size_bytes > max_bytes:
            return Loaded(
                content_hash,
                metadata_hash,
                error=f"{name} is {doc.size_bytes} bytes, over the {max_bytes}-byte limit per document; split it.",
            )
        try:
            metadata: dict[str, MetadataValue] = {}
            if doc.sidecar is not None:
                if self.bucket is not None:
                    try:
                        raw = json.loads(self._read(doc.sidecar))
                    except ValueError:
                        raise DocumentParseError(
                            f"{name}{SIDECAR_SUFFIX} is not valid JSON; fix it or remove it."
                        ) from None
                    metadata = parse_sidecar(raw, name=name + SIDECAR_SUFFIX)
                else:
                    metadata = read_sidecar(Path(doc.sidecar))
            parsed = self._parse(doc)
        except DocumentParseError as exc:
            return Loaded(content_hash, metadata_hash, error=exc.reason)
        return Loaded(content_hash, metadata_hash, parsed=parsed, metadata=metadata)

    def _parse(self, doc: SourceDocument) -> ParsedDocument:
        if self.bucket is None:
            return parse_document(Path(doc.key))
        name = PurePosixPath(doc.key).name
        with tempfile.TemporaryDirectory(prefix="outcrop-kb-") as tmp:
            local = Path(tmp) / name  # parse_document reads the type from the name
            local.write_bytes(self._read(doc.key))
            return parse_document(local)


def _local_folder(raw: str, config: OutcropConfig) -> Path:
    if raw.startswith("file://"):
        parsed = urlparse(raw)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidRequestError(
                f"{BUCKET_PARAM} {raw!r} names host {parsed.netloc!r}; file:// URIs must be local: "
                "file:///absolute/folder.",
                param=BUCKET_PARAM,
            )
        path = Path(unquote(parsed.path))
    else:
        path = Path(raw)
    return resolve_within_roots(
        path, raw, config, param=BUCKET_PARAM, purpose="read documents from", items="the documents"
    )


def open_source(configuration: dict[str, Any], config: OutcropConfig) -> DocumentSource:
    """The documents a ``dataSourceConfiguration`` names; ValidationException naming the accepted forms."""
    kind = configuration.get("type")
    if kind != "S3":
        raise InvalidRequestError(
            f"dataSourceConfiguration.type is {kind!r}; Outcrop's knowledge bases read S3-type data sources "
            "(a bucket, or a folder on the server). Use type 'S3' with s3Configuration.bucketArn.",
            param="dataSourceConfiguration.type",
        )
    s3 = configuration.get("s3Configuration")
    if not isinstance(s3, dict) or not isinstance(s3.get("bucketArn"), str) or not s3["bucketArn"].strip():
        raise InvalidRequestError(
            f"{BUCKET_PARAM} is required: arn:aws:s3:::bucket, s3://bucket/prefix, or a folder on the server "
            "(file:///absolute/folder or /absolute/folder) inside the allowed roots.",
            param=BUCKET_PARAM,
        )
    raw = s3["bucketArn"].strip()
    prefixes = s3.get("inclusionPrefixes") or []
    if not isinstance(prefixes, list) or len(prefixes) > 1 or not all(isinstance(p, str) for p in prefixes):
        raise InvalidRequestError(
            f"{PREFIX_PARAM} takes at most one prefix (a string), as Bedrock's does.", param=PREFIX_PARAM
        )
    prefix = prefixes[0].lstrip("/") if prefixes else ""
    if "\x00" in raw or "%00" in raw or ".." in PurePosixPath(prefix).parts:
        raise InvalidRequestError(
            f"{BUCKET_PARAM} {raw[:200]!r} (prefix {prefix[:100]!r}) holds a NUL byte or '..'; give a plain "
            "bucket or folder.",
            param=BUCKET_PARAM,
        )
    if raw.startswith(_BUCKET_ARN_PREFIX):
        bucket = raw[len(_BUCKET_ARN_PREFIX) :]
        if not bucket or "/" in bucket:
            raise InvalidRequestError(
                f"{BUCKET_PARAM} {raw!r} is not a bucket ARN; use arn:aws:s3:::bucket-name.",
                param=BUCKET_PARAM,
            )
        return DocumentSource(config, bucket=bucket, prefix=prefix)
    if raw.startswith("s3://"):
        parsed = urlparse(raw)
        if not parsed.netloc:
            raise InvalidRequestError(f"{BUCKET_PARAM} {raw!r} has no bucket; use s3://bucket/prefix/.")
        return DocumentSource(config, bucket=parsed.netloc, prefix=parsed.path.lstrip("/") + prefix)
    if raw.startswith("file://") or raw.startswith("/"):
        return DocumentSource(config, path=_local_folder(raw, config), prefix=prefix)
    raise InvalidRequestError(
        f"{BUCKET_PARAM} {raw[:200]!r} is not a location Outcrop can read. Use arn:aws:s3:::bucket, "
        "s3://bucket/prefix, or a folder on the server: file:///absolute/folder or /absolute/folder.",
        param=BUCKET_PARAM,
    )


def check_source(configuration: dict[str, Any], config: OutcropConfig) -> DocumentSource:
    """:func:`open_source`, and a local folder must exist (CreateDataSource / UpdateDataSource)."""
    source = open_source(configuration, config)
    if source.path is not None and not source.path.is_dir():
        raise InvalidRequestError(
            f"{source.path}: no such folder on the server (the server reads it, not the client). Create it or "
            "fix the bucketArn.",
            param=BUCKET_PARAM,
        )
    return source
