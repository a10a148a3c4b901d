"""Append-only schema migrations.

Each entry is ``(version, description, statements)``; versions are unique, applied in list
order, and each is recorded once applied (a gap in the numbers is harmless). Never edit an entry that has shipped:
add a new one. The statements are plain SQL that SQLite and PostgreSQL both accept
(timestamps are epoch seconds as DOUBLE PRECISION; JSON is TEXT).
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "import jobs, imported models and their files",
        [
            """
            CREATE TABLE import_jobs (
                id VARCHAR(12) PRIMARY KEY,
                name VARCHAR(63) NOT NULL UNIQUE,
                imported_model_name VARCHAR(63) NOT NULL,
                role_arn TEXT,
                source_uri TEXT NOT NULL,
                status VARCHAR(16) NOT NULL,
                phase VARCHAR(32) NOT NULL DEFAULT 'queued',
                failure_message TEXT,
                bytes_done BIGINT NOT NULL DEFAULT 0,
                bytes_total BIGINT NOT NULL DEFAULT 0,
                files_done INTEGER NOT NULL DEFAULT 0,
                files_total INTEGER NOT NULL DEFAULT 0,
                client_request_token VARCHAR(256),
                job_tags TEXT NOT NULL DEFAULT '[]',
                model_tags TEXT NOT NULL DEFAULT '[]',
                vpc_config TEXT,
                kms_key_id TEXT,
                imported_model_id VARCHAR(12),
                claimed_by TEXT,
                heartbeat_at DOUBLE PRECISION,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                ended_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX ix_import_jobs_status ON import_jobs (status)",
            "CREATE INDEX ix_import_jobs_created_at ON import_jobs (created_at)",
            """
            CREATE TABLE imported_models (
                id VARCHAR(12) PRIMARY KEY,
                name VARCHAR(63) NOT NULL UNIQUE,
                job_id VARCHAR(12),
                job_name VARCHAR(63),
                source_uri TEXT NOT NULL,
                architecture VARCHAR(128) NOT NULL,
                model_type VARCHAR(64) NOT NULL,
                parameter_count BIGINT NOT NULL,
                dtype VARCHAR(16) NOT NULL,
                context_length INTEGER NOT NULL,
                size_bytes BIGINT NOT NULL,
                instruct_supported BOOLEAN NOT NULL,
                memory_estimate_bytes BIGINT NOT NULL,
                tags TEXT NOT NULL DEFAULT '[]',
                kms_key_id TEXT,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ix_imported_models_created_at ON imported_models (created_at)",
            """
            CREATE TABLE model_files (
                model_id VARCHAR(12) NOT NULL,
                path TEXT NOT NULL,
                sha256 VARCHAR(64) NOT NULL,
                size_bytes BIGINT NOT NULL,
                PRIMARY KEY (model_id, path)
            )
            """,
            "CREATE INDEX ix_model_files_sha256 ON model_files (sha256)",
        ],
    ),
    (
        2,
        "shared settings (invocation logging configuration)",
        [
            """
            CREATE TABLE settings (
                key VARCHAR(64) PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
        ],
    ),
    (
        4,
        "principals: access keys (secret encrypted) and API keys (hashed) with policies",
        [
            """
            CREATE TABLE principals (
                id VARCHAR(12) PRIMARY KEY,
                name VARCHAR(64) NOT NULL UNIQUE,
                access_key_id VARCHAR(32) NOT NULL UNIQUE,
                secret_encrypted TEXT NOT NULL,
                api_key_hash VARCHAR(64) UNIQUE,
                api_key_prefix VARCHAR(16),
                policy TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
        ],
    ),
    (
        3,
        "batch inference jobs, their input files, finished records and the watched folder",
        [
            """
            CREATE TABLE batch_jobs (
                id VARCHAR(12) PRIMARY KEY,
                name VARCHAR(63) NOT NULL UNIQUE,
                model_id TEXT NOT NULL,
                model_key VARCHAR(12) NOT NULL,
                role_arn TEXT,
                input_uri TEXT NOT NULL,
                output_uri TEXT NOT NULL,
                invocation_type VARCHAR(16) NOT NULL,
                status VARCHAR(24) NOT NULL,
                message TEXT,
                client_request_token VARCHAR(256),
                tags TEXT NOT NULL DEFAULT '[]',
                vpc_config TEXT,
                timeout_hours INTEGER NOT NULL,
                total_records BIGINT NOT NULL DEFAULT 0,
                processed_records BIGINT NOT NULL DEFAULT 0,
                success_records BIGINT NOT NULL DEFAULT 0,
                error_records BIGINT NOT NULL DEFAULT 0,
                input_tokens BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                claimed_by TEXT,
                heartbeat_at DOUBLE PRECISION,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                started_at DOUBLE PRECISION,
                ended_at DOUBLE PRECISION,
                expires_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ix_batch_jobs_status ON batch_jobs (status)",
            "CREATE INDEX ix_batch_jobs_created_at ON batch_jobs (created_at)",
            """
            CREATE TABLE batch_files (
                job_id VARCHAR(12) NOT NULL,
                file_index INTEGER NOT NULL,
                name TEXT NOT NULL,
                size_bytes BIGINT NOT NULL,
                sha256 VARCHAR(64) NOT NULL,
                record_count BIGINT NOT NULL,
                output_bytes BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (job_id, file_index)
            )
            """,
            """
            CREATE TABLE batch_records (
                job_id VARCHAR(12) NOT NULL,
                file_index INTEGER NOT NULL,
                line_no BIGINT NOT NULL,
                ok BOOLEAN NOT NULL,
                PRIMARY KEY (job_id, file_index, line_no)
            )
            """,
            """
            CREATE TABLE batch_watch (
                source_key TEXT PRIMARY KEY,
                job_id VARCHAR(12),
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
        ],
    ),
    (
        5,
        "tokens used per principal per minute, shared by every gateway of a store",
        [
            """
            CREATE TABLE token_usage (
                principal VARCHAR(128) NOT NULL,
                minute BIGINT NOT NULL,
                tokens BIGINT NOT NULL,
                PRIMARY KEY (principal, minute)
            )
            """,
        ],
    ),
    (
        6,
        "named leases: the one gateway that autoscales a shared fleet, and which gateways are alive",
        [
            """
            CREATE TABLE leases (
                name VARCHAR(128) PRIMARY KEY,
                holder VARCHAR(256) NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            )
            """,
        ],
    ),
    (
        7,
        "each gateway's current demand per model, so the one that autoscales a shared fleet sees all traffic",
        [
            """
            CREATE TABLE fleet_demand (
                gateway VARCHAR(256) NOT NULL,
                model_id VARCHAR(12) NOT NULL,
                demand INTEGER NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (gateway, model_id)
            )
            """,
        ],
    ),
    (
        8,
        "each gateway's offered request rate per principal, so requests/s limits hold across gateways",
        [
            """
            CREATE TABLE request_rates (
                gateway VARCHAR(256) NOT NULL,
                principal VARCHAR(128) NOT NULL,
                rate DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (gateway, principal)
            )
            """,
        ],
    ),
    (
        9,
        "batch jobs count the times they died with their server, so a job that keeps crashing ends Failed",
        [
            "ALTER TABLE batch_jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
        ],
    ),
    (
        10,
        "batch jobs record the principal that created them (authorization of their records and visibility); "
        "keys made with the built-in read-only policy no longer grant outcrop:ListKeys",
        [
            "ALTER TABLE batch_jobs ADD COLUMN owner_id VARCHAR(12)",
            "CREATE INDEX ix_batch_jobs_owner_id ON batch_jobs (owner_id)",
            # The built-in read-only policy as stored before this version, exactly, becomes today's.
            """
            UPDATE principals SET policy = '{"Statement": [{"Effect": "Allow", "Action": ["bedrock:Get*", "bedrock:List*", "outcrop:Get*", "outcrop:ListCopies"], "Resource": ["*"]}]}'
            WHERE policy = '{"Statement": [{"Effect": "Allow", "Action": ["bedrock:Get*", "bedrock:List*", "outcrop:Get*", "outcrop:List*"], "Resource": ["*"]}]}'
            """,
        ],
    ),
    (
        # SageMaker-compatible endpoints (issue 17). Self-contained: only its own tables. Each row keeps
        # the request's validated shape as JSON ('spec'), so the Describe answers echo what was created.
        11,
        "SageMaker models, endpoint configs and endpoints",
        [
            """
            CREATE TABLE sagemaker_models (
                name VARCHAR(63) PRIMARY KEY,
                spec TEXT NOT NULL,
                imported_model VARCHAR(1011) NOT NULL,
                import_job_id VARCHAR(12),
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE sagemaker_endpoint_configs (
                name VARCHAR(63) PRIMARY KEY,
                spec TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE sagemaker_endpoints (
                name VARCHAR(63) PRIMARY KEY,
                config_name VARCHAR(63) NOT NULL,
                status VARCHAR(32) NOT NULL,
                failure_reason TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
        ],
    ),
    (
        # Prompt management (issue 16, boto3 bedrock-agent). Self-contained: only its own tables. A prompt's
        # DRAFT and its numbered versions are rows of prompt_versions; each keeps the validated prompt
        # (name, description, variants, ...) as JSON ('spec'). last_version only grows, so a deleted
        # version's number is never given again.
        12,
        "prompts (Prompt management) and their DRAFT and numbered versions",
        [
            """
            CREATE TABLE prompts (
                id VARCHAR(10) PRIMARY KEY,
                name VARCHAR(200) NOT NULL UNIQUE,
                last_version INTEGER NOT NULL DEFAULT 0,
                client_token VARCHAR(256),
                tags TEXT NOT NULL DEFAULT '{}',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ix_prompts_created_at ON prompts (created_at)",
            """
            CREATE TABLE prompt_versions (
                prompt_id VARCHAR(10) NOT NULL,
                version VARCHAR(5) NOT NULL,
                spec TEXT NOT NULL,
                client_token VARCHAR(256),
                tags TEXT NOT NULL DEFAULT '{}',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (prompt_id, version)
            )
            """,
        ],
    ),
    (
        # Guardrails (issue 16). Self-contained: only its own tables. 'spec' is the checked
        # configuration as JSON (GetGuardrail's policy members, outcrop/guardrails/policy.py); a
        # numbered version is a copy of the draft's spec at CreateGuardrailVersion and never changes.
        13,
        "guardrails and their immutable numbered versions",
        [
            """
            CREATE TABLE guardrails (
                id VARCHAR(12) PRIMARY KEY,
                name VARCHAR(50) NOT NULL UNIQUE,
                status VARCHAR(16) NOT NULL,
                spec TEXT NOT NULL,
                tags TEXT NOT NULL DEFAULT '[]',
                client_request_token VARCHAR(256),
                next_version INTEGER NOT NULL DEFAULT 1,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ix_guardrails_created_at ON guardrails (created_at)",
            """
            CREATE TABLE guardrail_versions (
                guardrail_id VARCHAR(12) NOT NULL,
                version INTEGER NOT NULL,
                description TEXT,
                spec TEXT NOT NULL,
                client_request_token VARCHAR(256),
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (guardrail_id, version)
            )
            """,
        ],
    ),
    (
        # SageMaker inference components (issue 17): several models on one endpoint, each with its
        # own copies. 'spec' is the validated Specification; copy_count its RuntimeConfig.CopyCount.
        14,
        "SageMaker inference components",
        [
            """
            CREATE TABLE sagemaker_inference_components (
                name VARCHAR(63) PRIMARY KEY,
                endpoint_name VARCHAR(63) NOT NULL,
                variant_name VARCHAR(63) NOT NULL,
                spec TEXT NOT NULL,
                copy_count INTEGER NOT NULL,
                status VARCHAR(32) NOT NULL,
                failure_reason TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ix_sagemaker_inference_components_endpoint ON sagemaker_inference_components (endpoint_name)",
        ],
    ),
    (
        # Embedding models (issue 18): what an imported model is for, and what an embedding model answers.
        15,
        "imported models record their kind (text or embedding), and an embedding model its dimension, "
        "pooling and whether it may be truncated (Matryoshka)",
        [
            "ALTER TABLE imported_models ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'text'",
            "ALTER TABLE imported_models ADD COLUMN embedding_dimension INTEGER",
            "ALTER TABLE imported_models ADD COLUMN embedding_pooling VARCHAR(16)",
            "ALTER TABLE imported_models ADD COLUMN embedding_truncatable BOOLEAN NOT NULL DEFAULT FALSE",
        ],
    ),
    (
        # Knowledge bases (issue 18; outcrop/knowledge/kbstore.py). 'spec' holds the validated wire
        # configuration as JSON; kb_documents is each data source's per-document content hash, which
        # makes a re-sync incremental and a resumed ingestion job count each document once.
        16,
        "knowledge bases, their data sources, ingestion jobs and indexed documents",
        [
            """
            CREATE TABLE knowledge_bases (
                id VARCHAR(10) PRIMARY KEY,
                name VARCHAR(100) NOT NULL UNIQUE,
                status VARCHAR(24) NOT NULL,
                embedding_model_id VARCHAR(12) NOT NULL,
                dimensions INTEGER NOT NULL,
                spec TEXT NOT NULL,
                failure_reasons TEXT NOT NULL DEFAULT '[]',
                client_token VARCHAR(256),
                tags TEXT NOT NULL DEFAULT '{}',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ix_knowledge_bases_created_at ON knowledge_bases (created_at)",
            """
            CREATE TABLE kb_data_sources (
                id VARCHAR(10) PRIMARY KEY,
                knowledge_base_id VARCHAR(10) NOT NULL,
                name VARCHAR(100) NOT NULL,
                status VARCHAR(24) NOT NULL,
                spec TEXT NOT NULL,
                failure_reasons TEXT NOT NULL DEFAULT '[]',
                client_token VARCHAR(256),
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                UNIQUE (knowledge_base_id, name)
            )
            """,
            """
            CREATE TABLE kb_ingestion_jobs (
                id VARCHAR(10) PRIMARY KEY,
                knowledge_base_id VARCHAR(10) NOT NULL,
                data_source_id VARCHAR(10) NOT NULL,
                description TEXT,
                status VARCHAR(16) NOT NULL,
                statistics TEXT NOT NULL DEFAULT '{}',
                failure_reasons TEXT NOT NULL DEFAULT '[]',
                client_token VARCHAR(256),
                claimed_by TEXT,
                heartbeat_at DOUBLE PRECISION,
                attempts INTEGER NOT NULL DEFAULT 0,
                started_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                ended_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX ix_kb_ingestion_jobs_data_source ON kb_ingestion_jobs (data_source_id, started_at)",
            "CREATE INDEX ix_kb_ingestion_jobs_status ON kb_ingestion_jobs (status)",
            """
            CREATE TABLE kb_documents (
                data_source_id VARCHAR(10) NOT NULL,
                uri TEXT NOT NULL,
                knowledge_base_id VARCHAR(10) NOT NULL,
                content_hash VARCHAR(80) NOT NULL,
                metadata_hash VARCHAR(80),
                status VARCHAR(16) NOT NULL,
                chunk_count INTEGER NOT NULL DEFAULT 0,
                job_id VARCHAR(10),
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (data_source_id, uri)
            )
            """,
        ],
    ),
    (
        # RetrieveAndGenerate sessions (issue 18, outcrop/knowledge/rag_sessions.py): the turns of one
        # conversation, so a follow-up with the same sessionId sees what was asked and answered before.
        # 'turns' is a JSON list of {"input", "output"}; a session lasts 24 hours from its start.
        17,
        "RetrieveAndGenerate sessions and their turns",
        [
            """
            CREATE TABLE rag_sessions (
                id VARCHAR(100) PRIMARY KEY,
                owner TEXT,
                knowledge_base_id VARCHAR(10) NOT NULL,
                kms_key_arn TEXT,
                turns TEXT NOT NULL DEFAULT '[]',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ix_rag_sessions_expires_at ON rag_sessions (expires_at)",
        ],
    ),
    (
        # Console v2 (issue 19): min/max copies set through PUT /outcrop/models/{id}/scaling, which win over
        # serving.defaults and serving.model_overrides (outcrop/store/model_scaling.py).
        18,
        "model_scaling: min and max copies per imported model, set through the API",
        [
            """
            CREATE TABLE model_scaling (
                model_id VARCHAR(12) PRIMARY KEY,
                min_copies INTEGER NOT NULL,
                max_copies INTEGER NOT NULL,
                updated_by VARCHAR(128),
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
        ],
    ),
]
