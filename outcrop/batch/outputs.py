"""Batch output: ``{outputUri}/{jobId}/<input>.jsonl.out`` per input file and ``manifest.json.out``.

Lines are appended to each ``.out`` file, flushed and fsynced *before* the checkpoint that
records them commits; the checkpoint stores how many bytes of the file hold checkpointed
lines. On resume the file is truncated back to that size, so a crash between the two
leaves no duplicate and no partial line. For ``s3://`` outputs the files are built in
``<data-dir>/batch/<job-id>/output/`` and uploaded when the job ends (completed, stopped,
partially completed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from outcrop.batch.inputs import Location
from outcrop.batch.store import BatchFile, BatchJob
from outcrop.config import OutcropConfig
from outcrop.errors import ServiceUnavailableError
from outcrop.registry.sources import s3_client

MANIFEST_NAME = "manifest.json.out"


def output_name(file: BatchFile) -> str:
    return f"{file.name}.out"


def manifest(job: BatchJob) -> dict[str, int]:
    return {
        "totalRecordCount": job.total_records,
        "processedRecordCount": job.processed_records,
        "successRecordCount": job.success_records,
        "errorRecordCount": job.error_records,
        "inputTokenCount": job.input_tokens,
        "outputTokenCount": job.output_tokens,
    }


class OutputWriter:
    """The .out files of one job run, opened at the checkpointed sizes."""

    def __init__(
        self, job: BatchJob, files: list[BatchFile], location: Location, config: OutcropConfig
    ) -> None:
        self.job = job
        self.location = location
        self.config = config
        if location.is_s3:
            self.folder = config.resolved_data_dir / "batch" / job.id / "output"
        else:
            assert location.path is not None
            self.folder = location.path / job.id
        self.files = {f.file_index: f for f in files}
        self._handles: dict[int, BinaryIO] = {}
        self.sizes: dict[int, int] = {}

    def path(self, file_index: int) -> Path:
        return self.folder / output_name(self.files[file_index])

    def open(self) -> list[int]:
        """Open every .out file at its checkpointed size (dropping lines written after the last
        checkpoint). Returns the indexes of files whose output is shorter than the checkpoint
        said (lost: a different server's staging folder); their records must run again."""
        lost: list[int] = []
        for index, f in self.files.items():
            path = self.path(index)
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 - closed in close()
            actual = fh.seek(0, os.SEEK_END)
            if actual < f.output_bytes:
                lost.append(index)
                keep = 0
            else:
                keep = f.output_bytes
            fh.truncate(keep)
            fh.seek(keep)
            self._handles[index] = fh
            self.sizes[index] = keep
        return lost

    def write(self, lines: dict[int, list[bytes]]) -> dict[int, int]:
        """Append complete lines, flush and fsync; returns the new sizes of the files written."""
        changed: dict[int, int] = {}
        for index, chunk in lines.items():
            if not chunk:
                continue
            fh = self._handles[index]
            fh.write(b"".join(chunk))
            fh.flush()
            os.fsync(fh.fileno())
            self.sizes[index] = fh.tell()
            changed[index] = self.sizes[index]
        return changed

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def finish(self, job: BatchJob) -> None:
        """Write the manifest and, for s3:// outputs, upload the folder."""
        self.close()
        (self.folder / MANIFEST_NAME).write_text(json.dumps(manifest(job)) + "\n")
        if self.location.is_s3:
            self._upload()

    def _upload(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client: Any = s3_client(self.config)
        prefix = self.location.key
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        try:
            for path in sorted(self.folder.rglob("*")):
                if path.is_file():
                    key = f"{prefix}{self.job.id}/{path.relative_to(self.folder).as_posix()}"
                    client.upload_file(str(path), self.location.bucket, key)
        except (ClientError, BotoCoreError) as exc:
            raise ServiceUnavailableError(
                f"Could not upload the outputs to {self.location.uri}: {exc}. Check the bucket and the S3 "
                "endpoint/credentials (OUTCROP_S3__*)."
            ) from None


def dumps_line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
