"""Table objects for queries (the DDL lives in ``migrations.py``; keep the two in step)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text),
    sa.Column("applied_at", sa.Float),
)

import_jobs = sa.Table(
    "import_jobs",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(63)),
    sa.Column("imported_model_name", sa.String(63)),
    sa.Column("role_arn", sa.Text),
    sa.Column("source_uri", sa.Text),
    sa.Column("status", sa.String(16)),
    sa.Column("phase", sa.String(32)),
    sa.Column("failure_message", sa.Text),
    sa.Column("bytes_done", sa.BigInteger),
    sa.Column("bytes_total", sa.BigInteger),
    sa.Column("files_done", sa.Integer),
    sa.Column("files_total", sa.Integer),
    sa.Column("client_request_token", sa.String(256)),
    sa.Column("job_tags", sa.Text),
    sa.Column("model_tags", sa.Text),
    sa.Column("vpc_config", sa.Text),
    sa.Column("kms_key_id", sa.Text),
    sa.Column("imported_model_id", sa.String(12)),
    sa.Column("claimed_by", sa.Text),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("attempts", sa.Integer),
    sa.Column("created_at", sa.Float),
    sa.Column("updated_at", sa.Float),
    sa.Column("ended_at", sa.Float),
)

imported_models = sa.Table(
    "imported_models",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(63)),
    sa.Column("job_id", sa.String(12)),
    sa.Column("job_name", sa.String(63)),
    sa.Column("source_uri", sa.Text),
    sa.Column("architecture", sa.String(128)),
    sa.Column("model_type", sa.String(64)),
    sa.Column("parameter_count", sa.BigInteger),
    sa.Column("dtype", sa.String(16)),
    sa.Column("context_length", sa.Integer),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("instruct_supported", sa.Boolean),
    sa.Column("memory_estimate_bytes", sa.BigInteger),
    sa.Column("tags", sa.Text),
    sa.Column("kms_key_id", sa.Text),
    sa.Column("created_at", sa.Float),
)

model_files = sa.Table(
    "model_files",
    metadata,
    sa.Column("model_id", sa.String(12), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("sha256", sa.String(64)),
    sa.Column("size_bytes", sa.BigInteger),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text),
    sa.Column("updated_at", sa.Float),
)

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(64)),
    sa.Column("access_key_id", sa.String(32)),
    sa.Column("secret_encrypted", sa.Text),
    sa.Column("api_key_hash", sa.String(64)),
    sa.Column("api_key_prefix", sa.String(16)),
    sa.Column("policy", sa.Text),
    sa.Column("created_at", sa.Float),
)

batch_jobs = sa.Table(
    "batch_jobs",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(63)),
    sa.Column("model_id", sa.Text),
    sa.Column("model_key", sa.String(12)),
    sa.Column("role_arn", sa.Text),
    sa.Column("input_uri", sa.Text),
    sa.Column("output_uri", sa.Text),
    sa.Column("invocation_type", sa.String(16)),
    sa.Column("status", sa.String(24)),
    sa.Column("message", sa.Text),
    sa.Column("client_request_token", sa.String(256)),
    sa.Column("tags", sa.Text),
    sa.Column("vpc_config", sa.Text),
    sa.Column("timeout_hours", sa.Integer),
    sa.Column("total_records", sa.BigInteger),
    sa.Column("processed_records", sa.BigInteger),
    sa.Column("success_records", sa.BigInteger),
    sa.Column("error_records", sa.BigInteger),
    sa.Column("input_tokens", sa.BigInteger),
    sa.Column("output_tokens", sa.BigInteger),
    sa.Column("claimed_by", sa.Text),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("attempts", sa.Integer),
    sa.Column("crashes", sa.Integer),  # claims taken over in a row from a dead holder; progress resets it
    sa.Column("created_at", sa.Float),
    sa.Column("updated_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("expires_at", sa.Float),
    sa.Column("owner_id", sa.String(12)),  # the principal that created the job; None: the server itself
)

batch_files = sa.Table(
    "batch_files",
    metadata,
    sa.Column("job_id", sa.String(12), primary_key=True),
    sa.Column("file_index", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("sha256", sa.String(64)),
    sa.Column("record_count", sa.BigInteger),
    sa.Column("output_bytes", sa.BigInteger),
)

batch_records = sa.Table(
    "batch_records",
    metadata,
    sa.Column("job_id", sa.String(12), primary_key=True),
    sa.Column("file_index", sa.Integer, primary_key=True),
    sa.Column("line_no", sa.BigInteger, primary_key=True),
    sa.Column("ok", sa.Boolean),
)

batch_watch = sa.Table(
    "batch_watch",
    metadata,
    sa.Column("source_key", sa.Text, primary_key=True),
    sa.Column("job_id", sa.String(12)),
    sa.Column("created_at", sa.Float),
)

token_usage = sa.Table(
    "token_usage",
    metadata,
    sa.Column("principal", sa.String(128), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),
    sa.Column("tokens", sa.BigInteger),
)

# SageMaker-compatible endpoints (outcrop/sagemaker/store.py).
sagemaker_models = sa.Table(
    "sagemaker_models",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("spec", sa.Text),
    sa.Column("imported_model", sa.String(1011)),
    sa.Column("import_job_id", sa.String(12)),
    sa.Column("created_at", sa.Float),
)

sagemaker_endpoint_configs = sa.Table(
    "sagemaker_endpoint_configs",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("spec", sa.Text),
    sa.Column("created_at", sa.Float),
)

sagemaker_endpoints = sa.Table(
    "sagemaker_endpoints",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("config_name", sa.String(63)),
    sa.Column("status", sa.String(32)),
    sa.Column("failure_reason", sa.Text),
    sa.Column("created_at", sa.Float),
    sa.Column("updated_at", sa.Float),
)
