"""Invocation logging in Bedrock's ``ModelInvocationLog`` record format, as JSONL under the data dir.

Enabled by the control plane's ``PutModelInvocationLoggingConfiguration`` (stored in the shared
database, so every gateway logs alike). Records land where Bedrock would put them in the
configured bucket, mirrored locally::

    <data-dir>/invocation-logs/<bucket>/<keyPrefix>/AWSLogs/<account>/BedrockModelInvocationLogs/
        <region>/<YYYY>/<MM>/<DD>/<HH>/<host>-<pid>.jsonl

With ``textDataDeliveryEnabled`` false, records keep the metadata and token counts but not the bodies.

S3 delivery: when the gateway has an S3 endpoint (``OUTCROP_S3__ENDPOINT_URL``, any S3-compatible
server; ``https://s3.<region>.amazonaws.com`` for AWS), the local files are the durable buffer and a
background thread ships what is new in them every ``delivery_seconds`` (and once more at shutdown)
to the configured bucket, as Bedrock does: gzipped JSONL objects under the same key layout::

    s3://<bucket>/<keyPrefix>/AWSLogs/<account>/BedrockModelInvocationLogs/<region>/<YYYY>/<MM>/<DD>/<HH>/
        <host>-<pid>-<byte offset>.json.gz

A ``.delivered`` file beside each local file records how far it was shipped. The object key holds
the byte offset, so a crash between an upload and that record re-sends the same bytes to the same
key: delivery is idempotent and no record is lost or doubled. Files of a gateway that died are
shipped once they have not changed for a while; a failing upload is logged and retried.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from outcrop.config import OutcropConfig
from outcrop.store.datadir import PRIVATE_DIR_MODE, open_private_append
from outcrop.store.settings import SettingsStore

log = logging.getLogger(__name__)

SETTINGS_KEY = "invocation_logging"
# Gateways re-read the shared configuration this often, so a Put takes effect everywhere within it.
CONFIG_REFRESH_SECONDS = 5.0
# Bedrock delivers invocation logs within minutes; a minute bounds what a crash of the S3
# endpoint can hold back without sending one small object per request.
DELIVERY_SECONDS = 60.0
# Another process's file that has not grown for this long belongs to a gateway that is gone.
ORPHAN_SECONDS = 120.0
DELIVERED_SUFFIX = ".delivered"


class InvocationLogger:
    def __init__(
        self, config: OutcropConfig, settings: SettingsStore, *, delivery_seconds: float = DELIVERY_SECONDS
    ) -> None:
        self.config = config
        self.settings = settings
        self.root = config.resolved_data_dir / "invocation-logs"
        self.delivery_seconds = delivery_seconds
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._read_at = 0.0
        self._file_name = f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self._s3: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None

    @property
    def delivers_to_s3(self) -> bool:
        return self.config.s3.endpoint_url is not None

    def start(self) -> None:
        if self.delivers_to_s3 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._deliver_loop, name="outcrop-invocation-logs", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the delivery thread after one last delivery of what this gateway wrote."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None
            self.deliver_once()

    # -- configuration ------------------------------------------------------------------

    def get_config(self) -> dict[str, Any] | None:
        return self.settings.get(SETTINGS_KEY)

    def put_config(self, logging_config: dict[str, Any]) -> None:
        self.settings.put(SETTINGS_KEY, logging_config)
        self._read_at = 0.0

    def delete_config(self) -> None:
        self.settings.delete(SETTINGS_KEY)
        self._read_at = 0.0

    def _active(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self._read_at > CONFIG_REFRESH_SECONDS:
            self._cached = self.get_config()
            self._read_at = now
        return self._cached

    # -- records ------------------------------------------------------------------------

    def identity_arn(self, principal: str) -> str:
        """Bedrock logs the caller's IAM ARN: a named principal becomes ``arn:aws:iam::<account>:user/<name>``;
        an unnamed caller (no auth, or an unknown key) keeps its throttling identity."""
        if ":" in principal:
            return principal
        return f"arn:aws:iam::{self.config.aws.account_id}:user/{principal}"

    def folder_for(self, logging_config: dict[str, Any], when: dt.datetime) -> Path:
        s3 = (
            logging_config.get("s3Config")
            or (logging_config.get("cloudWatchConfig") or {}).get("largeDataDeliveryS3Config")
            or {}
        )
        bucket = s3.get("bucketName") or "local"
        prefix = (s3.get("keyPrefix") or "").strip("/")
        aws = self.config.aws
        parts = [
            bucket,
            *([prefix] if prefix else []),
            "AWSLogs",
            aws.account_id,
            "BedrockModelInvocationLogs",
            aws.region,
            when.strftime("%Y"),
            when.strftime("%m"),
            when.strftime("%d"),
            when.strftime("%H"),
        ]
        return self.root.joinpath(*parts)

    def log(
        self,
        *,
        request_id: str,
        operation: str,
        model_id: str,
        principal: str,
        input_body: Any,
        output_body: Any,
        input_tokens: int,
        output_tokens: int,
        guardrail: dict[str, Any] | None = None,
    ) -> None:
        logging_config = self._active()
        if not logging_config:
            return
        with_text = logging_config.get("textDataDeliveryEnabled", True)
        now = dt.datetime.now(dt.UTC)
        aws = self.config.aws
        record: dict[str, Any] = {
            "schemaType": "ModelInvocationLog",
            "schemaVersion": "1.0",
            "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "accountId": aws.account_id,
            "identity": {"arn": self.identity_arn(principal)},
            "region": aws.region,
            "requestId": request_id,
            "operation": operation,
            "modelId": model_id,
            "input": {"inputContentType": "application/json", "inputTokenCount": input_tokens},
            "output": {"outputContentType": "application/json", "outputTokenCount": output_tokens},
        }
        if guardrail is not None:  # which guardrail ran and what it did (policies, kinds, actions)
            record["guardrail"] = guardrail
        if with_text:
            record["input"]["inputBodyJson"] = input_body
            record["output"]["outputBodyJson"] = output_body
        folder = self.folder_for(logging_config, now)
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            # 0600: the records hold prompts and answers.
            with os.fdopen(open_private_append(folder / self._file_name), "a", encoding="utf-8") as fh:
                fh.write(line)

    # -- S3 delivery ----------------------------------------------------------------------

    def _deliver_loop(self) -> None:
        while not self._stop.wait(self.delivery_seconds):
            self.deliver_once()

    def deliver_once(self) -> int:
        """Ship what is new in the local files to S3; returns the number of objects written."""
        if not self.delivers_to_s3 or not self.root.is_dir():
            return 0
        written = 0
        for path in sorted(self.root.rglob("*.jsonl")):
            mine = path.name == self._file_name
            try:
                if not mine and time.time() - path.stat().st_mtime < ORPHAN_SECONDS:
                    continue  # another live gateway's file: it ships its own
                written += self._deliver_file(path, mine)
            except Exception as exc:  # keep the bytes local and retry on the next round
                reason = f"{type(exc).__name__}: {exc}"
                if reason != self._last_error:
                    log.warning(
                        "invocation log delivery to S3 failed; the records stay under the data dir and "
                        "are retried",
                        extra={"file": str(path), "reason": reason},
                    )
                self._last_error = reason
                return written
        self._last_error = None
        return written

    def _deliver_file(self, path: Path, mine: bool) -> int:
        marker = path.with_name(path.name + DELIVERED_SUFFIX)
        try:
            offset = int(marker.read_text().strip() or 0)
        except (OSError, ValueError):
            offset = 0
        with self._lock if mine else contextlib.nullcontext(), open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # whole lines only: a writer may be mid-line
        if end == 0:
            return 0
        relative = path.parent.relative_to(self.root).parts
        bucket, folder = relative[0], "/".join(relative[1:])
        key = f"{folder}/{path.stem}-{offset:012d}.json.gz"
        if self._s3 is None:
            from outcrop.registry.sources import s3_client

            self._s3 = s3_client(self.config)
        self._s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=gzip.compress(data[:end]),
            ContentType="application/json",
            ContentEncoding="gzip",
        )
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(str(offset + end))
        os.replace(tmp, marker)
        return 1
