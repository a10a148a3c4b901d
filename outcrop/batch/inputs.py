"""Batch input: where the ``.jsonl`` files are, a private snapshot of them, and the line checks.

At validation the job's input files (a local path, ``file://`` or ``s3://``; one file or a
folder of ``*.jsonl``) are copied into ``<data-dir>/batch/<job-id>/input/<n>.jsonl`` while
being hashed, and every line is checked there. The runner reads the snapshot, so the
records it runs are exactly the ones that were validated, even if the source changes; a
server that lacks the snapshot (another machine on the same store) fetches the source
again and refuses it if its sha256 differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from outcrop.config import BatchConfig, OutcropConfig
from outcrop.errors import InvalidRequestError, ServiceUnavailableError
from outcrop.registry.sources import resolve_within_roots, s3_client  # the one S3 client set-up

# Problems listed in a failure message; the rest are counted ("... and 12 more").
MAX_PROBLEMS_LISTED = 20
# Copy/hash chunk: large enough to stream a 1 GB file in a few hundred reads.
CHUNK_BYTES = 4 * 1024**2
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
# Deepest nesting of arrays/objects a record may have. Real InvokeModel/Converse bodies nest
# under 10 levels (tool inputs a few more); Python's parser, and everything that walks the
# record after it, recurse once per level, so a line nested 100k deep would crash them.
MAX_JSON_DEPTH = 64
# A JSON string (escapes included): brackets inside strings do not nest anything.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")
# A \uD800-\uDFFF escape: parses, but a lone one cannot be written out as UTF-8.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Location:
    """A parsed input or output URI: a local path, or an S3 bucket + key/prefix."""

    uri: str
    path: Path | None = None  # local
    bucket: str | None = None  # s3
    key: str = ""  # s3 key or prefix, without a leading '/'

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None


def parse_location(uri: str, config: OutcropConfig, param: str) -> Location:
    """A local path (inside the allowed roots), ``file://`` or ``s3://`` URI; else InvalidRequestError."""
    uri = uri.strip()
    if "\x00" in uri or "%00" in uri:
        raise InvalidRequestError(
            f"{param} {uri!r} contains a NUL byte; give a plain path or URI.", param=param
        )
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise InvalidRequestError(f"{param} {uri!r} has no bucket; use s3://bucket/prefix/.", param=param)
        return Location(uri, bucket=parsed.netloc, key=parsed.path.lstrip("/"))
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidRequestError(
                f"{param} {uri!r} names host {parsed.netloc!r}; file:// URIs must be local: file:///absolute/path.",
                param=param,
            )
        path = Path(unquote(parsed.path))
    elif uri.startswith("/"):
        path = Path(uri)
    else:
        raise InvalidRequestError(
            f"{param} {uri!r} is not a location Outcrop can use. Give s3://bucket/prefix/, "
            "file:///absolute/path or an absolute path on the server (/data/batch/input.jsonl).",
            param=param,
        )
    resolved = resolve_within_roots(path, uri, config, param=param, purpose="use", items="the files")
    return Location(uri, path=resolved)


# -- the input files ------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    name: str  # relative POSIX path under the input location; the output is ``<name>.out``
    size_bytes: int
    source: str  # local path or S3 key


def list_inputs(location: Location, config: OutcropConfig, client: Any = None) -> list[InputFile]:
    """The ``.jsonl`` files of the input (one file, or every ``*.jsonl`` under a folder), sorted."""
    uri = location.uri
    if location.is_s3:
        from botocore.exceptions import BotoCoreError, ClientError

        client = client or s3_client(config)
        found: list[InputFile] = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=location.bucket, Prefix=location.key):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key == location.key:  # the URI names one object
                        found.append(InputFile(PurePosixPath(key).name, int(obj["Size"]), key))
                        continue
                    prefix = (
                        location.key if location.key.endswith("/") or not location.key else location.key + "/"
                    )
                    if not key.startswith(prefix) or not key.endswith(".jsonl"):
                        continue
                    rel = key[len(prefix) :]
                    if any(part.startswith(".") or part == ".." for part in PurePosixPath(rel).parts):
                        continue
                    found.append(InputFile(rel, int(obj["Size"]), key))
        except (ClientError, BotoCoreError) as exc:
            raise ServiceUnavailableError(
                f"{uri}: cannot list the input objects: {exc}. Check the bucket, prefix and the S3 "
                "endpoint/credentials (OUTCROP_S3__*)."
            ) from None
        files = sorted(found, key=lambda f: f.name)
    else:
        assert location.path is not None
        path = location.path
        if path.is_file():
            files = [InputFile(path.name, path.stat().st_size, str(path))]
        elif path.is_dir():
            files = sorted(
                (
                    InputFile(p.relative_to(path).as_posix(), p.stat().st_size, str(p))
                    for p in path.rglob("*.jsonl")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                ),
                key=lambda f: f.name,
            )
        else:
            raise InvalidRequestError(f"{uri}: no such file or folder on the server. Check the input path.")
    if not files:
        raise InvalidRequestError(
            f"{uri}: no .jsonl files there. Put the records in one or more .jsonl files."
        )
    return files


def snapshot(
    location: Location, item: InputFile, dest: Path, config: OutcropConfig, client: Any = None
) -> str:
    """Copy one input file to ``dest``; returns its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".part")
    # 0600: the snapshot holds the users' prompts (the data dir is private too).
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        if location.is_s3:
            client = client or s3_client(config)
            body = client.get_object(Bucket=location.bucket, Key=item.source)["Body"]
            while chunk := body.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
        else:
            with open(item.source, "rb") as src:
                while chunk := src.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
    tmp.replace(dest)
    return digest.hexdigest()


def copy_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


# -- records --------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    file_index: int
    line_no: int  # 1-based physical line number in its file
    record_id: str
    model_input: Any  # as the line gave it; the runner checks its shape (a bad one is an error line)


def default_record_id(job_id: str, file_index: int, line_no: int) -> str:
    """The id of a record that has none: 11 [a-z0-9] characters, the same on every read (crash-resume)."""
    digest = hashlib.sha256(f"{job_id}:{file_index}:{line_no}".encode()).digest()
    return "".join(_ID_CHARS[b % len(_ID_CHARS)] for b in digest[:11])


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of one JSON text nest (brackets inside strings do not count).

    A scan of the bytes, no parsing, so it is safe on any input: run it before ``json.loads``.
    """
    if raw.count(b"[") + raw.count(b"{") == 0:
        return 0
    depth = peak = 0
    for match in _BRACKETS.finditer(_JSON_STRING.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            peak = max(peak, depth)
        else:
            depth -= 1
    return peak


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for every non-blank line."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                yield number, raw


def read_records(path: Path, job_id: str, file_index: int) -> Iterator[Record]:
    """The records of a validated snapshot (lines that failed validation never reach here)."""
    for number, raw in iter_lines(path):
        data = json.loads(raw)
        record_id = data.get("recordId")
        yield Record(
            file_index,
            number,
            record_id if isinstance(record_id, str) else default_record_id(job_id, file_index, number),
            data.get("modelInput"),
        )


@dataclass
class LineCheck:
    """Validation state across a job's files (record ids are unique per job)."""

    limits: BatchConfig
    job_id: str
    seen_ids: dict[str, str] = field(default_factory=dict)  # recordId -> "file:line" first seen
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_LISTED:
            self.problems.append(text)

    def parse_line(self, raw: bytes, where: str) -> Any | None:
        """The line's JSON value, or None after recording why it cannot be used."""
        depth = json_depth(raw)
        if depth > MAX_JSON_DEPTH:
            self.problem(
                f"{where}: the JSON nests {depth:,} levels deep; the limit is {MAX_JSON_DEPTH}. "
                "Flatten the record (a model input never needs that depth)."
            )
            return None
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as exc:
            self.problem(
                f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8."
            )
            return None
        except json.JSONDecodeError as exc:
            self.problem(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object.")
            return None
        except (ValueError, RecursionError) as exc:
            reason = str(exc)[:200]
            if "integer string conversion" in reason:
                reason = "a number with more than 4,300 digits; write it as a string"
            self.problem(f"{where}: not usable JSON ({reason}); each line must be one JSON object.")
            return None
        if _SURROGATE_ESCAPE.search(raw):
            try:
                json.dumps(data, ensure_ascii=False).encode()
            except UnicodeEncodeError:
                self.problem(
                    f"{where}: a \\u escape names a lone UTF-16 surrogate (\\ud800-\\udfff without its pair), "
                    "which is not text; fix the escape or drop the character."
                )
                return None
        return data

    def check_file(self, name: str, path: Path, file_index: int) -> int:
        """Check every line of one file; returns its record count."""
        count = 0
        for number, raw in iter_lines(path):
            where = f"{name} line {number}"
            count += 1
            if len(raw) > self.limits.max_record_bytes:
                self.problem(
                    f"{where}: the record has {len(raw):,} bytes; the limit is {self.limits.max_record_bytes:,} "
                    "(OUTCROP_BATCH__MAX_RECORD_BYTES). Shorten it or split the input."
                )
                continue
            try:
                data = self.parse_line(raw, where)
            except Exception as exc:  # anything a hostile line can make a parser raise
                self.problem(f"{where}: cannot be read ({type(exc).__name__}: {str(exc)[:200]}).")
                continue
            if data is None:
                continue
            if not isinstance(data, dict):
                self.problem(
                    f'{where}: a JSON {type(data).__name__}, not an object; write {{"recordId": "...", "modelInput": {{...}}}}.'
                )
                continue
            if "modelInput" not in data:
                self.problem(
                    f"{where}: no 'modelInput'; give the InvokeModel (or Converse) body as modelInput."
                )
            record_id = data.get("recordId")
            if record_id is None:
                record_id = default_record_id(self.job_id, file_index, number)
            elif not isinstance(record_id, str) or not record_id:
                self.problem(
                    f"{where}: recordId is {record_id!r}; it must be a non-empty string (or left out)."
                )
                continue
            first = self.seen_ids.setdefault(record_id, where)
            if first != where:
                self.problem(
                    f"{where}: recordId {record_id!r} was already used at {first}; recordIds must be unique."
                )
        if count > self.limits.max_records_per_file:
            self.problem(
                f"{name}: {count:,} records; the limit per file is {self.limits.max_records_per_file:,} "
                "(OUTCROP_BATCH__MAX_RECORDS_PER_FILE). Split the file."
            )
        return count

    def message(self) -> str:
        lines = "\n".join(f"- {p}" for p in self.problems)
        more = self.problem_count - len(self.problems)
        tail = f"\n- ... and {more} more" if more > 0 else ""
        return f"The input failed {self.problem_count} check(s); no records were run:\n{lines}{tail}"
