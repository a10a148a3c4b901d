"""Where an import reads a model folder from: a local path, ``file://`` or ``s3://``.

A source lists the folder's files (rejecting anything unsafe before a byte is copied) and
fetches one file into the staging area, hashing it on the way.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, ModelValidationError
from outcrop.registry.validation import list_source_files

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative POSIX path inside the model folder
    size_bytes: int


class Source(Protocol):
    uri: str

    def list_files(self) -> list[SourceFile]: ...

    def fetch(self, path: str, dest: Path, on_bytes: ProgressFn) -> str:
        """Copy one file to ``dest``; returns its sha256. Calls ``on_bytes(n)`` as bytes go by."""
        ...


def open_source(uri: str, config: OutcropConfig) -> Source:
    """The source for a modelDataSource URI; raises InvalidRequestError naming the accepted forms."""
    uri = uri.strip()
    if "\x00" in uri or "%00" in uri:
        raise InvalidRequestError(
            f"s3Uri {uri!r} contains a NUL byte; give a plain path or URI.",
            param="modelDataSource.s3DataSource.s3Uri",
        )
    if uri.startswith("s3://"):
        return S3Source(uri, config)
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidRequestError(
                f"s3Uri {uri!r} names host {parsed.netloc!r}; file:// URIs must be local: file:///absolute/path.",
                param="modelDataSource.s3DataSource.s3Uri",
            )
        return LocalSource(uri, Path(unquote(parsed.path)), config)
    if uri.startswith("/"):
        return LocalSource(uri, Path(uri), config)
    raise InvalidRequestError(
        f"s3Uri {uri!r} is not a location Outcrop can import from. Use s3://bucket/prefix/, "
        "file:///absolute/path or an absolute path on the server (/data/models/my-model).",
        param="modelDataSource.s3DataSource.s3Uri",
    )


def resolve_within_roots(
    path: Path, uri: str, config: OutcropConfig, *, param: str, purpose: str, items: str
) -> Path:
    """``path`` resolved, if it has no '..' and lies inside an allowed root; else InvalidRequestError."""
    if ".." in path.parts:
        raise InvalidRequestError(
            f"{param} {uri!r} contains '..'; give the absolute path without '..' segments.", param=param
        )
    resolved = path.resolve()
    roots = config.import_roots()
    if not any(resolved == root or root in resolved.parents for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise InvalidRequestError(
            f"{resolved} is outside the folders this server may {purpose} ({allowed}). Move {items} into one "
            "of them, or add its parent to OUTCROP_REGISTRY__ALLOWED_ROOTS.",
            param=param,
        )
    return resolved


class LocalSource:
    """A folder on the server's filesystem, inside one of the configured allowed roots."""

    def __init__(self, uri: str, path: Path, config: OutcropConfig) -> None:
        self.uri = uri
        self.chunk_bytes = config.registry.copy_chunk_bytes
        self.root = resolve_within_roots(
            path,
            uri,
            config,
            param="modelDataSource.s3DataSource.s3Uri",
            purpose="import from",
            items="the model",
        )

    def list_files(self) -> list[SourceFile]:
        if not self.root.is_dir():
            raise ModelValidationError(
                [
                    f"{self.root}: no such folder on the server. Check the path (it is read by the server, not the client)."
                ]
            )
        return [SourceFile(p, (self.root / p).stat().st_size) for p in list_source_files(self.root)]

    def fetch(self, path: str, dest: Path, on_bytes: ProgressFn) -> str:
        """Kernel copy, and a hash of the source computed while it is read (see ``_pipelined_copy``)."""
        src = self.root / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _pipelined_copy(src, dest, self.chunk_bytes, on_bytes)


class S3Source:
    """``s3://bucket/prefix/`` on AWS S3 or any S3-compatible server (endpoint from config)."""

    def __init__(self, uri: str, config: OutcropConfig) -> None:
        self.uri = uri
        parsed = urlparse(uri)
        self.bucket = parsed.netloc
        prefix = parsed.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        if not self.bucket:
            raise InvalidRequestError(
                f"s3Uri {uri!r} has no bucket; use s3://bucket/prefix/.",
                param="modelDataSource.s3DataSource.s3Uri",
            )
        self.chunk_bytes = config.registry.copy_chunk_bytes
        self._client = s3_client(config)

    def list_files(self) -> list[SourceFile]:
        from botocore.exceptions import BotoCoreError, ClientError

        files: list[SourceFile] = []
        problems: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) :]
                    if not rel or rel.endswith("/"):
                        continue
                    parts = PurePosixPath(rel).parts
                    if ".." in parts or rel.startswith("/"):
                        problems.append(
                            f"{obj['Key']}: key leaves the model folder ('..' or absolute); remove it."
                        )
                        continue
                    if any(part.startswith(".") for part in parts):
                        continue
                    files.append(SourceFile(rel, int(obj["Size"])))
        except (ClientError, BotoCoreError) as exc:
            raise ModelValidationError(
                [
                    f"{self.uri}: cannot list the objects: {exc}. Check the bucket, prefix "
                    "and the S3 endpoint/credentials (OUTCROP_S3__*)."
                ]
            ) from None
        if problems:
            raise ModelValidationError(problems)
        if not files:
            raise ModelValidationError(
                [f"{self.uri}: no objects under this prefix. Upload the model folder there."]
            )
        return sorted(files, key=lambda f: f.path)

    def fetch(self, path: str, dest: Path, on_bytes: ProgressFn) -> str:
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        body = self._client.get_object(Bucket=self.bucket, Key=self.prefix + path)["Body"]
        with open(dest, "wb") as out:
            while chunk := body.read(self.chunk_bytes):
                digest.update(chunk)
                out.write(chunk)
                on_bytes(len(chunk))
        return digest.hexdigest()


# Buffers cycling between the reader and the hasher: one being filled, one being hashed, one spare.
PREFETCH_BUFFERS = 3


def _hash_while_reading(src: Path, chunk_bytes: int, on_bytes: ProgressFn) -> str:
    """sha256 of ``src``; a reader thread fills the next buffer while this thread hashes the last."""
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(PREFETCH_BUFFERS):
        free.put(bytearray(chunk_bytes))
    full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with open(src, "rb", buffering=0) as fh:
                while not stop.is_set():
                    buf = free.get()
                    n = fh.readinto(buf)
                    if not n:
                        break
                    full.put((buf, n))
        except BaseException as exc:
            errors.append(exc)
        finally:
            full.put(None)

    reader = threading.Thread(target=read, name=f"read:{src.name}", daemon=True)
    reader.start()
    digest = hashlib.sha256()
    try:
        while (item := full.get()) is not None:
            buf, n = item
            digest.update(memoryview(buf)[:n])
            free.put(buf)
            on_bytes(n)
    finally:
        stop.set()
        free.put(bytearray(0))  # wake a reader waiting for a buffer
        reader.join()
    if errors:
        raise errors[0]
    return digest.hexdigest()


def _pipelined_copy(src: Path, dest: Path, chunk_bytes: int, on_bytes: ProgressFn) -> str:
    """Copy ``src`` to ``dest`` in the kernel (one thread) while hashing it (two more threads):
    the time is about max(copy, read, hash) rather than their sum."""
    errors: list[BaseException] = []

    def copy() -> None:
        try:
            shutil.copyfile(src, dest)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    copier = threading.Thread(target=copy, name=f"copy:{src.name}", daemon=True)
    copier.start()
    try:
        digest = _hash_while_reading(src, chunk_bytes, on_bytes)
    finally:
        copier.join()
    if errors:
        raise errors[0]
    return digest


def s3_client(config: OutcropConfig) -> Any:
    import boto3
    from botocore.config import Config

    s3 = config.s3
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        region_name=s3.region or config.aws.region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
    )
