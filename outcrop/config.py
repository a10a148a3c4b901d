"""Outcrop's one typed configuration tree.

``OutcropConfig`` holds one section per component; constructors take the section they
need. Every field has a default, bounds and a one-line description. Values come from
(lowest to highest precedence) the defaults here, ``OUTCROP_*`` environment variables
(read only in ``outcrop.envs``) and CLI flags.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

GIB = 1024**3

# Bedrock's account-wide defaults, kept as ours so users moving over see the same limits.
# Both are configuration, not hard limits (DESIGN.md "Quotas").
DEFAULT_IMPORTED_MODELS_QUOTA = 100  # Bedrock's default is 3; self-hosters import many more.
DEFAULT_CONCURRENT_IMPORT_JOBS = 2  # Bedrock allows 1; 2 keeps one import from blocking a second on 2 cores.


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Section):
    host: str = Field("127.0.0.1", description="Address `outcrop serve` binds; loopback by default.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the one HTTP server (0 = any free).")
    log_level: str = Field("info", description="Log level: debug, info, warning or error.")
    log_json: bool = Field(False, description="Write logs as one JSON object per line.")


class AwsIdentityConfig(_Section):
    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,32}$", description="Region written into ARNs.")
    account_id: str = Field("000000000000", pattern=r"^[0-9]{12}$", description="Account written into ARNs.")


class StoreConfig(_Section):
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the metadata store; None = sqlite:///<data-dir>/outcrop.db (WAL).",
    )
    # Why 30 s: long enough that a busy server never looks dead, short enough that a
    # crashed server's jobs are picked up again within a minute of another one starting.
    job_lease_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A claimed job whose heartbeat is "
        "older than this is considered abandoned and can be re-claimed.",
    )


class S3Config(_Section):
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint for s3:// URIs (None = AWS).")
    access_key_id: str | None = Field(None, description="Access key for s3:// (None = default chain).")
    secret_access_key: str | None = Field(None, description="Secret key for s3:// (None = default chain).")
    region: str | None = Field(None, description="Region for s3:// requests.")


class RegistryConfig(_Section):
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="Local folders imports may read from (a source outside them is rejected); "
        "empty = the user's home folder, the current directory and the data dir.",
    )
    model_store_url: str | None = Field(
        None, description="Where blobs and manifests live (local path or s3://); None = <data-dir>/models."
    )
    # Bedrock's limits for text models: weights < 200 GB, context < 128K.
    max_model_bytes: int = Field(200 * 10**9, gt=0, description="Largest model folder accepted at import.")
    max_context_tokens: int = Field(131072, gt=0, description="Largest max_position_embeddings accepted.")
    # A safetensors header is JSON describing tensors; 100 MB fits millions of tensors and
    # stops a hostile header from making the validator allocate gigabytes.
    max_safetensors_header_bytes: int = Field(100 * 1024**2, gt=0, description="Largest header accepted.")
    # tokenizer.json of large-vocabulary models is ~10-30 MB; 100 MB leaves room and still
    # stops a hostile "config.json" from being read whole into memory.
    max_metadata_file_bytes: int = Field(
        100 * 1024**2, gt=0, description="Largest JSON/tokenizer/template file read during validation."
    )
    max_imported_models: int = Field(DEFAULT_IMPORTED_MODELS_QUOTA, ge=1, description="Quota of models.")
    max_concurrent_import_jobs: int = Field(
        DEFAULT_CONCURRENT_IMPORT_JOBS, ge=1, description="Quota of import jobs in progress at once."
    )
    copy_chunk_bytes: int = Field(8 * 1024**2, ge=64 * 1024, description="Read size while copying.")


class OutcropConfig(_Section):
    data_dir: Path = Field(Path("~/.outcrop"), description="Where the database, model store and logs live.")
    server: ServerConfig = Field(default_factory=ServerConfig)
    aws: AwsIdentityConfig = Field(default_factory=AwsIdentityConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    s3: S3Config = Field(default_factory=S3Config)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.store.database_url or f"sqlite:///{self.resolved_data_dir / 'outcrop.db'}"

    @property
    def model_store_url(self) -> str:
        return self.registry.model_store_url or str(self.resolved_data_dir / "models")

    def import_roots(self) -> list[Path]:
        """The folders local imports may read from, resolved."""
        if self.registry.allowed_roots:
            return [p.expanduser().resolve() for p in self.registry.allowed_roots]
        return [Path.home().resolve(), Path.cwd().resolve(), self.resolved_data_dir]
