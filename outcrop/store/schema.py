"""Table objects for queries: the schema the migrations build, declared.

The DDL lives in ``migrations.py``; ``tests/store/test_schema.py`` migrates a database (SQLite
and PostgreSQL) and checks it against these declarations: tables, columns, types, nullability,
primary keys, unique constraints and indexes. A new migration comes with its change here.
"""

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
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("imported_model_name", sa.String(63), nullable=False),
    sa.Column("role_arn", sa.Text),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("phase", sa.String(32), nullable=False),
    sa.Column("failure_message", sa.Text),
    sa.Column("bytes_done", sa.BigInteger, nullable=False),
    sa.Column("bytes_total", sa.BigInteger, nullable=False),
    sa.Column("files_done", sa.Integer, nullable=False),
    sa.Column("files_total", sa.Integer, nullable=False),
    sa.Column("client_request_token", sa.String(256)),
    sa.Column("job_tags", sa.Text, nullable=False),
    sa.Column("model_tags", sa.Text, nullable=False),
    sa.Column("vpc_config", sa.Text),
    sa.Column("kms_key_id", sa.Text),
    sa.Column("imported_model_id", sa.String(12)),
    sa.Column("claimed_by", sa.Text),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
)
sa.Index("ix_import_jobs_status", import_jobs.c.status)
sa.Index("ix_import_jobs_created_at", import_jobs.c.created_at)

imported_models = sa.Table(
    "imported_models",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("job_id", sa.String(12)),
    sa.Column("job_name", sa.String(63)),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("architecture", sa.String(128), nullable=False),
    sa.Column("model_type", sa.String(64), nullable=False),
    sa.Column("parameter_count", sa.BigInteger, nullable=False),
    sa.Column("dtype", sa.String(16), nullable=False),
    sa.Column("context_length", sa.Integer, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("instruct_supported", sa.Boolean, nullable=False),
    sa.Column("memory_estimate_bytes", sa.BigInteger, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("kms_key_id", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    # "text" (served by the engine worker) or "embedding" (outcrop.engine.embedding_worker); migration 15.
    sa.Column("kind", sa.String(16), nullable=False, server_default="text"),
    sa.Column("embedding_dimension", sa.Integer),  # the pooled vector's length (embedding models)
    sa.Column("embedding_pooling", sa.String(16)),  # mean | cls | lasttoken (embedding models)
    sa.Column("embedding_truncatable", sa.Boolean, nullable=False, server_default=sa.false()),
)
sa.Index("ix_imported_models_created_at", imported_models.c.created_at)

model_files = sa.Table(
    "model_files",
    metadata,
    sa.Column("model_id", sa.String(12), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
)
sa.Index("ix_model_files_sha256", model_files.c.sha256)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("access_key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("secret_encrypted", sa.Text, nullable=False),
    sa.Column("api_key_hash", sa.String(64), unique=True),
    sa.Column("api_key_prefix", sa.String(16)),
    sa.Column("policy", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

batch_jobs = sa.Table(
    "batch_jobs",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("model_id", sa.Text, nullable=False),
    sa.Column("model_key", sa.String(12), nullable=False),
    sa.Column("role_arn", sa.Text),
    sa.Column("input_uri", sa.Text, nullable=False),
    sa.Column("output_uri", sa.Text, nullable=False),
    sa.Column("invocation_type", sa.String(16), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("client_request_token", sa.String(256)),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("vpc_config", sa.Text),
    sa.Column("timeout_hours", sa.Integer, nullable=False),
    sa.Column("total_records", sa.BigInteger, nullable=False),
    sa.Column("processed_records", sa.BigInteger, nullable=False),
    sa.Column("success_records", sa.BigInteger, nullable=False),
    sa.Column("error_records", sa.BigInteger, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("claimed_by", sa.Text),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False),
    # Claims taken over in a row from a dead holder; progress resets it (migration 9).
    sa.Column("crashes", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("owner_id", sa.String(12)),  # the principal that created the job; None: the server itself
)
sa.Index("ix_batch_jobs_status", batch_jobs.c.status)
sa.Index("ix_batch_jobs_created_at", batch_jobs.c.created_at)
sa.Index("ix_batch_jobs_owner_id", batch_jobs.c.owner_id)

batch_files = sa.Table(
    "batch_files",
    metadata,
    sa.Column("job_id", sa.String(12), primary_key=True),
    sa.Column("file_index", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("record_count", sa.BigInteger, nullable=False),
    sa.Column("output_bytes", sa.BigInteger, nullable=False),
)

batch_records = sa.Table(
    "batch_records",
    metadata,
    sa.Column("job_id", sa.String(12), primary_key=True),
    sa.Column("file_index", sa.Integer, primary_key=True),
    sa.Column("line_no", sa.BigInteger, primary_key=True),
    sa.Column("ok", sa.Boolean, nullable=False),
)

batch_watch = sa.Table(
    "batch_watch",
    metadata,
    sa.Column("source_key", sa.Text, primary_key=True),
    sa.Column("job_id", sa.String(12)),
    sa.Column("created_at", sa.Float, nullable=False),
)

token_usage = sa.Table(
    "token_usage",
    metadata,
    sa.Column("principal", sa.String(128), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),
    sa.Column("tokens", sa.BigInteger, nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

fleet_demand = sa.Table(
    "fleet_demand",
    metadata,
    sa.Column("gateway", sa.String(256), primary_key=True),
    sa.Column("model_id", sa.String(12), primary_key=True),
    sa.Column("demand", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

request_rates = sa.Table(
    "request_rates",
    metadata,
    sa.Column("gateway", sa.String(256), primary_key=True),
    sa.Column("principal", sa.String(128), primary_key=True),
    sa.Column("rate", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# SageMaker-compatible endpoints (outcrop/sagemaker/store.py).
sagemaker_models = sa.Table(
    "sagemaker_models",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("imported_model", sa.String(1011), nullable=False),
    sa.Column("import_job_id", sa.String(12)),
    sa.Column("created_at", sa.Float, nullable=False),
)

sagemaker_endpoint_configs = sa.Table(
    "sagemaker_endpoint_configs",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

sagemaker_endpoints = sa.Table(
    "sagemaker_endpoints",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("config_name", sa.String(63), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("failure_reason", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Prompt management (outcrop/prompts/store.py).
prompts = sa.Table(
    "prompts",
    metadata,
    sa.Column("id", sa.String(10), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("client_token", sa.String(256)),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_prompts_created_at", "created_at"),
)

prompt_versions = sa.Table(
    "prompt_versions",
    metadata,
    sa.Column("prompt_id", sa.String(10), primary_key=True),
    sa.Column("version", sa.String(5), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("client_token", sa.String(256)),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Guardrails (outcrop/guardrails/store.py; migration 13).
guardrails = sa.Table(
    "guardrails",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("client_request_token", sa.String(256)),
    sa.Column("next_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Index("ix_guardrails_created_at", guardrails.c.created_at)

guardrail_versions = sa.Table(
    "guardrail_versions",
    metadata,
    sa.Column("guardrail_id", sa.String(12), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("client_request_token", sa.String(256)),
    sa.Column("created_at", sa.Float, nullable=False),
)

# SageMaker inference components (outcrop/sagemaker/store.py; migration 14).
sagemaker_inference_components = sa.Table(
    "sagemaker_inference_components",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("endpoint_name", sa.String(63), nullable=False),
    sa.Column("variant_name", sa.String(63), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("copy_count", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("failure_reason", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Index("ix_sagemaker_inference_components_endpoint", sagemaker_inference_components.c.endpoint_name)

# Min/max copies per imported model set through the API (outcrop/store/model_scaling.py; migration 18).
model_scaling = sa.Table(
    "model_scaling",
    metadata,
    sa.Column("model_id", sa.String(12), primary_key=True),
    sa.Column("min_copies", sa.Integer, nullable=False),
    sa.Column("max_copies", sa.Integer, nullable=False),
    sa.Column("updated_by", sa.String(128)),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# Knowledge bases (outcrop/knowledge/kbstore.py; migration 16).
knowledge_bases = sa.Table(
    "knowledge_bases",
    metadata,
    sa.Column("id", sa.String(10), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("embedding_model_id", sa.String(12), nullable=False),
    sa.Column("dimensions", sa.Integer, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("failure_reasons", sa.Text, nullable=False, server_default="[]"),
    sa.Column("client_token", sa.String(256)),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_knowledge_bases_created_at", "created_at"),
)

kb_data_sources = sa.Table(
    "kb_data_sources",
    metadata,
    sa.Column("id", sa.String(10), primary_key=True),
    sa.Column("knowledge_base_id", sa.String(10), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("failure_reasons", sa.Text, nullable=False, server_default="[]"),
    sa.Column("client_token", sa.String(256)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("knowledge_base_id", "name"),
)

kb_ingestion_jobs = sa.Table(
    "kb_ingestion_jobs",
    metadata,
    sa.Column("id", sa.String(10), primary_key=True),
    sa.Column("knowledge_base_id", sa.String(10), nullable=False),
    sa.Column("data_source_id", sa.String(10), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("statistics", sa.Text, nullable=False, server_default="{}"),
    sa.Column("failure_reasons", sa.Text, nullable=False, server_default="[]"),
    sa.Column("client_token", sa.String(256)),
    sa.Column("claimed_by", sa.Text),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Index("ix_kb_ingestion_jobs_data_source", "data_source_id", "started_at"),
    sa.Index("ix_kb_ingestion_jobs_status", "status"),
)

kb_documents = sa.Table(
    "kb_documents",
    metadata,
    sa.Column("data_source_id", sa.String(10), primary_key=True),
    sa.Column("uri", sa.Text, primary_key=True),
    sa.Column("knowledge_base_id", sa.String(10), nullable=False),
    sa.Column("content_hash", sa.String(80), nullable=False),
    sa.Column("metadata_hash", sa.String(80)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("job_id", sa.String(10)),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# RetrieveAndGenerate sessions (outcrop/knowledge/rag_sessions.py; migration 17).
rag_sessions = sa.Table(
    "rag_sessions",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("owner", sa.Text),
    sa.Column("knowledge_base_id", sa.String(10), nullable=False),
    sa.Column("kms_key_arn", sa.Text),
    sa.Column("turns", sa.Text, nullable=False, server_default="[]"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
sa.Index("ix_rag_sessions_expires_at", rag_sessions.c.expires_at)
