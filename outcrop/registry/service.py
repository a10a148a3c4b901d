"""The registry service: import jobs and imported models, as the API and the CLI use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.registry import arns
from outcrop.registry.modelstore import ModelStore
from outcrop.registry.sources import open_source
from outcrop.store.db import Database
from outcrop.store.imports import ImportedModel, ImportJob, ImportStore, ListFilter, Page, new_id


@dataclass(frozen=True)
class CreateImportJob:
    job_name: str
    imported_model_name: str
    source_uri: str
    role_arn: str | None = None
    client_request_token: str | None = None
    job_tags: tuple[dict[str, str], ...] = ()
    model_tags: tuple[dict[str, str], ...] = ()
    vpc_config: dict[str, Any] | None = None
    kms_key_id: str | None = None


class Registry:
    """Creates import jobs, answers questions about jobs and models, deletes models."""

    def __init__(self, config: OutcropConfig, db: Database) -> None:
        self.config = config
        self.db = db
        self.jobs = ImportStore(db)
        self.store = ModelStore(config.model_store_url)

    # -- import jobs ------------------------------------------------------------------

    def create_import_job(self, request: CreateImportJob) -> ImportJob:
        arns.check_name(request.job_name, arns.JOB_NAME_RE, "jobName", "my-import-job-1")
        arns.check_name(request.imported_model_name, arns.MODEL_NAME_RE, "importedModelName", "my_model-v2")
        if request.role_arn is not None and not arns.ROLE_ARN_RE.fullmatch(request.role_arn):
            raise InvalidRequestError(
                f"1 validation error detected: Value {request.role_arn!r} at 'roleArn' is not an IAM role ARN "
                "(arn:aws:iam::123456789012:role/MyRole). Outcrop records the role but does not assume it.",
                param="roleArn",
            )
        # Fails fast, before a job exists, on a malformed URI or a path outside the allowed roots.
        open_source(request.source_uri, self.config)
        job = ImportJob(
            id=new_id(),
            name=request.job_name,
            imported_model_name=request.imported_model_name,
            source_uri=request.source_uri,
            role_arn=request.role_arn,
            client_request_token=request.client_request_token,
            job_tags=list(request.job_tags),
            model_tags=list(request.model_tags),
            vpc_config=request.vpc_config,
            kms_key_id=request.kms_key_id,
        )
        return self.jobs.create_job(
            job,
            max_in_progress=self.config.registry.max_concurrent_import_jobs,
            max_models=self.config.registry.max_imported_models,
        )

    def get_job(self, identifier: str) -> ImportJob:
        key = arns.identifier_to_key(identifier, "model-import-job", arns.JOB_NAME_RE, "jobIdentifier")
        return self.jobs.get_job(key)

    def list_jobs(self, flt: ListFilter) -> Page:
        return self.jobs.list_jobs(flt)

    def job_arn(self, job: ImportJob) -> str:
        return arns.job_arn(self.config.aws, job.id)

    # -- models -----------------------------------------------------------------------

    def get_model(self, identifier: str) -> ImportedModel:
        key = arns.identifier_to_key(identifier, "imported-model", arns.MODEL_NAME_RE, "modelIdentifier")
        return self.jobs.get_model(key)

    def list_models(self, flt: ListFilter) -> Page:
        return self.jobs.list_models(flt)

    def model_arn(self, model: ImportedModel) -> str:
        return arns.model_arn(self.config.aws, model.id)

    def delete_model(self, identifier: str) -> ImportedModel:
        model = self.get_model(identifier)
        unreferenced = self.jobs.delete_model(model.id)
        self.store.remove_model(model.id, unreferenced)
        return model

    def model_folder(self, identifier: str, *, verify_sha256: bool = False) -> Path:
        """A local folder with the model's files (what a copy loads), verified against the store."""
        model = self.get_model(identifier)
        return self.store.materialize(model.id, self.jobs.model_files(model.id), verify_sha256=verify_sha256)
