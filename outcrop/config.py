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
# Both are configuration, not hard limits (docs/architecture.md, "Defaults that follow Bedrock").
DEFAULT_IMPORTED_MODELS_QUOTA = 100  # Bedrock's default is 3; self-hosters import many more.
DEFAULT_CONCURRENT_IMPORT_JOBS = 2  # Bedrock allows 1; 2 keeps one import from blocking a second on 2 cores.


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Section):
    host: str = Field("127.0.0.1", description="Address `outcrop serve` binds; loopback by default.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the one HTTP server (0 = any free).")
    log_level: str = Field("info", description="Log level: debug, info, warning or error.")
    log_json: bool = Field(False, description="Write logs as one JSON object per line.")
    tls_cert_file: Path | None = Field(None, description="PEM certificate: serve HTTPS (with tls_key_file).")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    # Why 10 s and 30 s: see outcrop/api/transport.py (slow clients must not hold connections).
    header_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Longest a client may take to send a request's headers."
    )
    body_idle_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="Longest a request's body may pause before the connection closes."
    )


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
    # Why 5 s: a real chat template renders a short conversation in milliseconds; one that takes
    # seconds would add them to every chat request. Counted after the checker process started.
    chat_template_render_seconds: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Longest a chat template may take to render a sample conversation at import.",
    )


# -- serving --------------------------------------------------------------------------

# Why 16: Bedrock's figure for concurrent requests per model copy, so load tests that were
# sized for Bedrock behave the same here.
DEFAULT_MAX_CONCURRENCY_PER_COPY = 16
# Why 300 s: Bedrock Custom Model Import keeps an idle copy about five minutes before
# scaling it in; long enough that a user's next prompt finds it warm.
DEFAULT_IDLE_SECONDS_BEFORE_SCALE_DOWN = 300.0


class ModelServingSpec(_Section):
    """How one model's copies scale and take load (``serving.defaults`` or a per-model override)."""

    min_copies: int = Field(
        0, ge=0, le=64, description="Copies kept running even when idle (0 = scale to zero; >0 = kept warm)."
    )
    # Why 1: on one machine a second copy of the same model competes for the same CPUs/GPU,
    # and continuous batching already uses them; raise it on multi-GPU hosts and fleets.
    max_copies: int = Field(1, ge=1, le=64, description="Most copies the autoscaler runs for the model.")
    max_concurrency_per_copy: int = Field(
        DEFAULT_MAX_CONCURRENCY_PER_COPY,
        ge=1,
        le=4096,
        description="Requests one copy serves at once; more wait in the model's queue.",
    )
    # Why 8: half the per-copy cap, so a new copy starts while the running ones still have
    # headroom (a cold start takes seconds, requests arrive in milliseconds).
    target_concurrency_per_copy: int = Field(
        8, ge=1, le=4096, description="In-flight + queued requests per copy the autoscaler aims for."
    )
    idle_seconds_before_scale_down: float = Field(
        DEFAULT_IDLE_SECONDS_BEFORE_SCALE_DOWN,
        ge=0,
        le=7 * 24 * 3600,
        description="A copy is stopped only after demand has been low for this long (hysteresis).",
    )
    cold_start_wait: bool | None = Field(
        None,
        description="Override the surface's cold-start behaviour for this model: True = hold requests "
        "until a copy is ready, False = answer ModelNotReady at once; None = the surface's default.",
    )


class ServingConfig(_Section):
    launcher: str = Field(
        "local",
        description="How copies start: 'local' (Outcrop's worker), 'command' (a command template) or "
        "'ray' (in Ray actors on a cluster's nodes; see the ray section).",
    )
    command_template: str | None = Field(
        None,
        description="For launcher 'command': the command line of an OpenAI-compatible server, with "
        "{model_dir}, {port}, {host} and {served_name} placeholders.",
    )
    command_health_path: str = Field(
        "/health", pattern=r"^/", description="For launcher 'command': GET path answering 200 once ready."
    )
    # vLLM and SGLang take --served-model-name; some servers (transformers serve) only answer to
    # the folder they loaded, so requests must name it: '{model_dir}'.
    command_request_model: str = Field(
        "{served_name}",
        pattern=r"^\{(served_name|model_dir)\}$",
        description="For launcher 'command': the 'model' each request names to the copy: '{served_name}' "
        "or '{model_dir}' (for servers without a served-name option). Answers name the model as usual.",
    )
    copy_host: str = Field("127.0.0.1", description="Address copies bind and the router calls.")
    worker_device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        description="Device of local copies (cpu, cuda, cuda:N); on CUDA the fit check reads free GPU memory.",
    )
    worker_threads: int | None = Field(
        None, ge=1, le=1024, description="torch threads per local copy (None = the worker's default)."
    )
    worker_max_batch: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Most sequences a local copy decodes at once (None = worker default).",
    )
    worker_kv_cache_bytes: int | None = Field(
        None, ge=1, description="KV-cache budget of a local copy (None = the worker's default)."
    )
    worker_extra_args: list[str] = Field(
        default_factory=list, description="Extra command-line arguments for every local copy."
    )
    defaults: ModelServingSpec = Field(
        default_factory=ModelServingSpec, description="Scaling settings of every model without an override."
    )
    model_overrides: dict[str, ModelServingSpec] = Field(
        default_factory=dict,
        description="Per-model settings by model name or id; fields set here replace those of 'defaults'.",
    )
    # Why 256: 16 full copies' worth of waiting requests; beyond that a client is better
    # served by a fast 503 (it can back off or go elsewhere) than by a long wait.
    max_queue_per_model: int = Field(
        256, ge=0, le=1_000_000, description="Requests that may wait for a copy; more get ServiceUnavailable."
    )
    # Why 600 s: longer than any max-length generation on CPU, short enough to free a stuck slot.
    default_deadline_seconds: float = Field(
        600.0, gt=0, le=24 * 3600, description="Deadline of a request that gives none (ModelTimeout after)."
    )
    # Why 120 s: loading a multi-GB model from local disk takes tens of seconds.
    cold_start_max_wait_seconds: float = Field(
        120.0, gt=0, le=3600, description="How long a holding surface waits for a copy before 503."
    )
    # Why 3 s: a tiny model loads in 1-3 s, so boto3's retries land just after it is ready.
    cold_start_retry_after_seconds: float = Field(
        3.0, gt=0, le=600, description="Retry-After sent with ModelNotReady while a copy starts."
    )
    copy_start_timeout_seconds: float = Field(
        600.0, gt=0, le=24 * 3600, description="A copy that is not healthy after this long is Failed."
    )
    health_interval_seconds: float = Field(
        2.0, gt=0, le=600, description="How often a ready copy's /health is checked."
    )
    # Why 5 s: a busy CPU copy may answer /health slowly; one slow answer is not a failure.
    health_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=600,
        description="How long one health check of a copy may take before it counts as failed.",
    )
    health_failures_before_failed: int = Field(
        3, ge=1, le=100, description="Consecutive failed health checks after which a copy is Failed."
    )
    restart_backoff_initial_seconds: float = Field(
        1.0, ge=0, le=3600, description="Wait before replacing a copy that failed; doubles per failure."
    )
    restart_backoff_max_seconds: float = Field(
        60.0, ge=0, le=24 * 3600, description="Longest wait between start attempts of a failing model."
    )
    # Why 60 s: the worker's own drain bound; a stop never holds shutdown for minutes.
    drain_timeout_seconds: float = Field(
        60.0, ge=0, le=3600, description="How long a stopping copy may finish requests before SIGKILL."
    )
    # Why 1 GiB: the OS, the gateway and page cache need room; a copy that squeezes them
    # out makes the whole machine swap or the OOM killer pick a victim.
    memory_reserve_bytes: int = Field(
        GIB,
        ge=0,
        description="Memory left free when deciding whether a copy fits (of /proc/meminfo MemAvailable).",
    )
    memory_limit_bytes: int | None = Field(
        None, ge=0, description="Total memory estimate all copies may use together (None = no budget)."
    )
    autoscaler_interval_seconds: float = Field(
        1.0, gt=0, le=600, description="How often the autoscaler looks at demand and copies."
    )
    # Why 5 s: resolving a model name hits the database (~0.3 ms); caching keeps the gateway
    # hop under 1 ms, and a deleted model stops being served within seconds.
    model_cache_seconds: float = Field(
        5.0, ge=0, le=3600, description="How long a resolved model name is cached by the router."
    )
    # Why 64: the bound of max_copies in serving.defaults; lower it so that no one can ask the API for
    # more copies of a model than this machine or fleet holds.
    scaling_max_copies: int = Field(
        64,
        ge=1,
        le=64,
        description="Highest maxCopies PUT /outcrop/models/{id}/scaling (`outcrop models scaling`) accepts.",
    )


# -- cluster (the ``ray`` launcher) ---------------------------------------------------


class RayCopyResources(_Section):
    """What one copy of a model reserves on a Ray node (a ``ray.model_resources`` entry)."""

    num_cpus: float | None = Field(None, ge=0, le=1024, description="CPUs per copy (None = ray.num_cpus).")
    num_gpus: float | None = Field(None, ge=0, le=64, description="GPUs per copy (None = ray.num_gpus).")
    memory_bytes: int | None = Field(
        None, ge=0, description="Memory reserved per copy (None = the model's recorded memory estimate)."
    )


class RayConfig(_Section):
    address: str = Field(
        "auto",
        description="Ray cluster to join: 'auto' (the node's running cluster), 'ray://host:10001' "
        "(Ray Client) or 'local' (start a private one-node cluster). Also read from OUTCROP_RAY_ADDRESS.",
    )
    namespace: str = Field(
        "outcrop",
        min_length=1,
        max_length=64,
        description="Ray namespace of the copy actors; gateways sharing one store must use the same one.",
    )
    copy_launcher: str = Field(
        "local",
        description="Which launcher builds the command a copy actor runs on its node: 'local' "
        "(Outcrop's worker) or 'command' (serving.command_template, e.g. vLLM).",
    )
    # Why 1: Outcrop's CPU worker uses the cores it is given; a copy per core is the honest default.
    num_cpus: float = Field(
        1.0, ge=0, le=1024, description="CPUs a copy reserves unless overridden per model."
    )
    num_gpus: float = Field(0.0, ge=0, le=64, description="GPUs a copy reserves unless overridden per model.")
    reserve_memory: bool = Field(
        True, description="Reserve each copy's memory estimate in Ray (so Ray only places copies that fit)."
    )
    model_resources: dict[str, RayCopyResources] = Field(
        default_factory=dict, description="Per-model resources by model name or id, replacing the defaults."
    )
    spread: bool = Field(True, description="Place copies of one model on different nodes when possible.")
    copy_host: str | None = Field(
        None, description="Address copies bind on their node (None = the node's IP, which is also their URL)."
    )
    node_cache_dir: Path | None = Field(
        None,
        description="Where a node without the shared model store materialises verified model folders "
        "(None = <tmp>/outcrop-node-cache).",
    )
    # Why 10 s: starting an actor on a busy node takes ~1 s; a minute-long Ray call means a lost node.
    call_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Longest wait for one call to a copy actor (start, describe, stop)."
    )
    # Why 60 s: a cluster autoscaler adds a node in about a minute; longer means no node will fit.
    placement_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How long a copy may wait for a node with its resources before it fails.",
    )
    # Why 1 s: copies another gateway started are routed to within a second.
    sync_interval_seconds: float = Field(
        1.0, gt=0, le=600, description="How often a gateway looks for copies other gateways started."
    )
    # Why 10 s: three missed renewals (autoscaler rounds) before another gateway takes over scaling.
    scaler_lease_seconds: float = Field(
        10.0, gt=0, le=3600, description="How long the autoscaler lease lasts without renewal."
    )


class ThrottlingConfig(_Section):
    enabled: bool = Field(True, description="Apply per-principal rate limits to inference requests.")
    # Generous defaults: they stop a runaway client, not normal use. Tighten per deployment.
    requests_per_second: float = Field(
        500.0, gt=0, le=1_000_000, description="Sustained inference requests per second per principal."
    )
    burst_seconds: float = Field(
        2.0, gt=0, le=3600, description="A principal may burst this many seconds' worth of requests at once."
    )
    tokens_per_minute: int = Field(
        10_000_000, gt=0, description="Input + output tokens per minute per principal."
    )


# -- batch ----------------------------------------------------------------------------

# Why 10: Bedrock's "10 batch inference jobs submitted per model per Region"; here it is a
# queue, not a rejection (docs/architecture.md), so users moving over see the same concurrency.
DEFAULT_BATCH_JOBS_PER_MODEL = 10


class BatchConfig(_Section):
    max_running_jobs_per_model: int = Field(
        DEFAULT_BATCH_JOBS_PER_MODEL,
        ge=1,
        le=10_000,
        description="Batch jobs of one model that run at once; more wait in Scheduled, first in first out.",
    )
    # Why 1 s: a job created or finished on THIS server wakes the runner at once; the poll only
    # matters for work another server sharing the store made claimable (a crash, a freed slot).
    poll_seconds: float = Field(
        1.0, gt=0, le=600, description="How often the runner looks for work other servers made claimable."
    )
    # Why 0.5 s / 64: a crash loses at most half a second of model time, and a 2,000-record job
    # does tens of store writes, not thousands.
    checkpoint_interval_seconds: float = Field(
        0.5, gt=0, le=600, description="Longest time finished records wait before they are checkpointed."
    )
    checkpoint_records: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Finished records that trigger a checkpoint before the interval ends.",
    )
    max_in_flight_per_model: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Batch records sent to one model at once "
        "(None = (max_concurrency_per_copy - online_reserved_slots_per_copy) x max_copies).",
    )
    # Why 2: an online request that arrives while a job fills every copy slot waits for a whole
    # batch generation; two free slots per copy let it start at once, for ~6% of batch throughput.
    online_reserved_slots_per_copy: int = Field(
        2, ge=0, le=4096, description="Copy slots batch records leave free for online requests."
    )
    # Why 3: a copy that restarts or a full queue passes in seconds; a record that fails three
    # times with a retryable error gets an error line instead of holding the job forever.
    record_max_attempts: int = Field(
        3, ge=1, le=100, description="Tries per record on retryable errors (busy, copy restarting, timeout)."
    )
    record_deadline_seconds: float = Field(
        600.0, gt=0, le=24 * 3600, description="Deadline of one record's model call (error line after it)."
    )
    # Why 3: one crash can be bad luck (the machine's OOM killer, a deploy); the same job taking
    # its server down three times with no progress in between is the job, and retrying it every
    # lease forever helps no one.
    max_crashes: int = Field(
        3,
        ge=1,
        le=100,
        description="Times in a row a job may die with its server (claim never released, no record "
        "finished in between) before it is Failed.",
    )
    # Bedrock's limits: 1 GB per input file, 5 GB per job; record counts are generous defaults.
    max_file_bytes: int = Field(10**9, gt=0, description="Largest input .jsonl file accepted.")
    max_job_bytes: int = Field(5 * 10**9, gt=0, description="Largest total input of one job.")
    # Why 4 MiB: far above any prompt a copy can take, small enough to stop a runaway line.
    max_record_bytes: int = Field(4 * 1024**2, gt=0, description="Largest single input line (one record).")
    max_records_per_file: int = Field(1_000_000, ge=1, description="Most records in one input file.")
    max_records_per_job: int = Field(1_000_000, ge=1, description="Most records in one job.")
    # Bedrock asks for 100; a self-hosted queue has no per-job overhead worth a minimum.
    min_records_per_job: int = Field(1, ge=1, description="Fewest records a job may have.")
    default_timeout_hours: int = Field(
        24,
        ge=1,
        le=168,
        description="timeoutDurationInHours of a job that gives none (Scheduled longer: Expired).",
    )
    watch_uri: str | None = Field(
        None,
        description="Watched folder (local path or s3://): each .jsonl dropped in its toprocess/ becomes a "
        "job; outputs land in processed/. None = off.",
    )
    watch_model: str | None = Field(None, description="Model (name or ARN) the watched folder's jobs use.")
    webhook_url: str | None = Field(
        None,
        description="POST each job state change here (Bedrock 'Batch Inference Job State Change' detail).",
    )


class AuthConfig(_Section):
    enabled: bool = Field(
        True,
        description="Require credentials (SigV4 or bearer API key) on every API route but /health, /metrics.",
    )
    server_key_file: Path | None = Field(
        None,
        description="Key that encrypts stored secrets (None = <data-dir>/server.key); share it between "
        "gateways of one store.",
    )
    bootstrap_access_key_id: str | None = Field(
        None,
        min_length=4,
        max_length=32,
        description="Access key id of the admin created on first start (None = random).",
    )
    bootstrap_secret_access_key: str | None = Field(
        None, min_length=4, max_length=128, description="Its secret (None = random)."
    )
    bootstrap_api_key: str | None = Field(
        None, min_length=8, max_length=256, description="Its bearer API key (None = random)."
    )
    audit_log: bool = Field(True, description="Write <data-dir>/audit/audit.jsonl.")


class SageMakerConfig(_Section):
    """SageMaker-compatible endpoints (docs/sagemaker.md)."""

    handlers_dir: Path | None = Field(
        None,
        description="Folder of Python handler modules (input_fn/output_fn) that models may name with "
        "OUTCROP_HANDLER; None = handlers are off. Only the operator writes here: never a model folder.",
    )
    # Why 10 s: a handler formats a prompt or parses an answer; one that takes longer is looping.
    handler_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="A handler call that runs longer is stopped; its request fails."
    )
    # Why 512 MiB: far above what payload shaping needs, far below what hurts the gateway's host.
    handler_memory_bytes: int = Field(
        512 * 1024 * 1024,
        ge=64 * 1024 * 1024,
        le=64 * 1024**3,
        description="Address-space limit of each handler worker process (RLIMIT_AS).",
    )


# -- knowledge bases ------------------------------------------------------------------


class KnowledgeConfig(_Section):
    """Knowledge bases (docs/knowledge-bases.md): the vector store and how ingestion feeds the embedder."""

    vector_store_uri: str | None = Field(
        None,
        description="Where chunks and vectors live (LanceDB): a local folder or s3://bucket/prefix shared by "
        "gateways; None = <data-dir>/knowledge.",
    )
    # Why 2: one data source's sync should not wait behind another's, and on a small machine more
    # jobs only divide the same embedder between them.
    max_running_jobs: int = Field(
        2, ge=1, le=1000, description="Ingestion jobs this server runs at once; more wait in STARTING."
    )
    # Why 8: 8 x 32 = 256 chunks in flight is two of a CPU copy's batches (128 inputs): while one
    # batch runs, the next is already queued in the copy, so it never idles for the answers to go
    # back and the next calls to come (with 128 in flight it ran one batch, then waited up to
    # 0.5 s for the next full one to arrive). Online requests still go first: the router and the
    # copy take them ahead of batch priority.
    embedding_concurrency: int = Field(
        8, ge=1, le=1024, description="Embedding calls one server's ingestion keeps in flight at once."
    )
    # Why 32: one call per 32 chunks amortizes the HTTP round trip; a copy batches calls together anyway.
    embedding_batch_size: int = Field(
        32, ge=1, le=2048, description="Chunks sent to the embedding model per call."
    )
    # Why 8: a copy that cold-starts or restarts is back within a few backoffs (0.5 s doubling to 15 s).
    embedding_max_attempts: int = Field(
        8, ge=1, le=100, description="Tries per embedding call on throttling, a cold copy or a busy queue."
    )
    embedding_backoff_seconds: float = Field(
        0.5, gt=0, le=60, description="First pause before retrying an embedding call; doubles each try."
    )
    embedding_max_backoff_seconds: float = Field(
        15.0, gt=0, le=600, description="Longest pause between two tries of an embedding call."
    )
    # Why 1 s: a job started on THIS server wakes the runner at once; the poll finds work other
    # servers left behind (a crash) or queued.
    poll_seconds: float = Field(
        1.0, gt=0, le=600, description="How often the ingestion runner looks for queued or abandoned jobs."
    )
    # Why 50 MB: Bedrock's limit per source document.
    max_document_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Larger source documents are counted as failed, with the reason."
    )


class OutcropConfig(_Section):
    data_dir: Path = Field(Path("~/.outcrop"), description="Where the database, model store and logs live.")
    server: ServerConfig = Field(default_factory=ServerConfig)
    aws: AwsIdentityConfig = Field(default_factory=AwsIdentityConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    s3: S3Config = Field(default_factory=S3Config)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    throttling: ThrottlingConfig = Field(default_factory=ThrottlingConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    sagemaker: SageMakerConfig = Field(default_factory=SageMakerConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.store.database_url or f"sqlite:///{self.resolved_data_dir / 'outcrop.db'}"

    @property
    def model_store_url(self) -> str:
        return self.registry.model_store_url or str(self.resolved_data_dir / "models")

    @property
    def server_key_path(self) -> Path:
        return (self.auth.server_key_file or self.resolved_data_dir / "server.key").expanduser()

    @property
    def credentials_path(self) -> Path:
        """Where the first start writes the admin's credentials (mode 0600), for the CLI and the demo."""
        return self.resolved_data_dir / "credentials.json"

    @property
    def knowledge_store_uri(self) -> str:
        """The vector store of knowledge bases: ``knowledge.vector_store_uri`` or <data-dir>/knowledge."""
        return self.knowledge.vector_store_uri or str(self.resolved_data_dir / "knowledge")

    def import_roots(self) -> list[Path]:
        """The folders local imports may read from, resolved."""
        if self.registry.allowed_roots:
            return [p.expanduser().resolve() for p in self.registry.allowed_roots]
        return [Path.home().resolve(), Path.cwd().resolve(), self.resolved_data_dir]
