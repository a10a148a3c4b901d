"""Invocation logging in Bedrock's ``ModelInvocationLog`` record format, as JSONL under the data dir.

Enabled by the control plane's ``PutModelInvocationLoggingConfiguration`` (stored in the shared
database, so every gateway logs alike). Records land where Bedrock would put them in the
configured bucket, mirrored locally::

    <data-dir>/invocation-logs/<bucket>/<keyPrefix>/AWSLogs/<account>/BedrockModelInvocationLogs/
        <region>/<YYYY>/<MM>/<DD>/<HH>/<host>-<pid>.jsonl

With ``textDataDeliveryEnabled`` false, records keep the metadata and token counts but not the bodies.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from outcrop.config import OutcropConfig
from outcrop.store.settings import SettingsStore

SETTINGS_KEY = "invocation_logging"
# Gateways re-read the shared configuration this often, so a Put takes effect everywhere within it.
CONFIG_REFRESH_SECONDS = 5.0


class InvocationLogger:
    def __init__(self, config: OutcropConfig, settings: SettingsStore) -> None:
        self.config = config
        self.settings = settings
        self.root = config.resolved_data_dir / "invocation-logs"
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._read_at = 0.0
        self._file_name = f"{socket.gethostname()}-{os.getpid()}.jsonl"

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
            "identity": {"arn": principal},
            "region": aws.region,
            "requestId": request_id,
            "operation": operation,
            "modelId": model_id,
            "input": {"inputContentType": "application/json", "inputTokenCount": input_tokens},
            "output": {"outputContentType": "application/json", "outputTokenCount": output_tokens},
        }
        if with_text:
            record["input"]["inputBodyJson"] = input_body
            record["output"]["outputBodyJson"] = output_body
        folder = self.folder_for(logging_config, now)
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / self._file_name, "a", encoding="utf-8") as fh:
                fh.write(line)
