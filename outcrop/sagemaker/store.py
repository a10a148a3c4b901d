"""Rows of SageMaker models, endpoint configs, endpoints and inference components in the metadata store.

A row keeps the validated request as JSON (``spec``): the Describe answers echo it, and the
runtime reads variants and templates from it. Models and endpoint configs are immutable, as in
SageMaker (a change is a new config and an UpdateEndpoint), which is what versions the
pre/post-processing templates along with them.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from outcrop.errors import InvalidRequestError
from outcrop.store.db import Database
from outcrop.store.schema import (
    sagemaker_endpoint_configs,
    sagemaker_endpoints,
    sagemaker_inference_components,
    sagemaker_models,
)


class EndpointStatus(enum.StrEnum):
    """The subset of SageMaker's EndpointStatus an Outcrop endpoint goes through."""

    CREATING = "Creating"  # variants are being checked and their provisioned copies started
    UPDATING = "Updating"  # a new config is being deployed; the old one keeps answering
    IN_SERVICE = "InService"  # invocations are routed to the variants' imported models
    FAILED = "Failed"  # FailureReason says why; only DeleteEndpoint (or UpdateEndpoint) helps

    def is_terminal(self) -> bool:
        return self in (EndpointStatus.IN_SERVICE, EndpointStatus.FAILED)

    def accepts_invocations(self) -> bool:
        return self in (EndpointStatus.IN_SERVICE, EndpointStatus.UPDATING)


# Allowed transitions (UpdateEndpoint on a Failed endpoint redeploys it).
TRANSITIONS: dict[EndpointStatus, frozenset[EndpointStatus]] = {
    EndpointStatus.CREATING: frozenset({EndpointStatus.IN_SERVICE, EndpointStatus.FAILED}),
    EndpointStatus.UPDATING: frozenset({EndpointStatus.IN_SERVICE, EndpointStatus.FAILED}),
    EndpointStatus.IN_SERVICE: frozenset({EndpointStatus.UPDATING}),
    EndpointStatus.FAILED: frozenset({EndpointStatus.UPDATING}),
}


class ComponentStatus(enum.StrEnum):
    """SageMaker's InferenceComponentStatus, as an Outcrop inference component goes through it."""

    CREATING = "Creating"  # its model is checked (or imported) and its CopyCount copies started
    UPDATING = "Updating"  # a new specification or copy count is deployed; the old one keeps answering
    IN_SERVICE = "InService"  # invocations naming it go to its model's copies
    FAILED = "Failed"  # FailureReason says why; UpdateInferenceComponent or DeleteInferenceComponent
    DELETING = "Deleting"  # its copies are released; the row goes next

    def is_terminal(self) -> bool:
        return self in (ComponentStatus.IN_SERVICE, ComponentStatus.FAILED)

    def accepts_invocations(self) -> bool:
        return self in (ComponentStatus.IN_SERVICE, ComponentStatus.UPDATING)


COMPONENT_TRANSITIONS: dict[ComponentStatus, frozenset[ComponentStatus]] = {
    ComponentStatus.CREATING: frozenset(
        {ComponentStatus.IN_SERVICE, ComponentStatus.FAILED, ComponentStatus.DELETING}
    ),
    ComponentStatus.UPDATING: frozenset({ComponentStatus.IN_SERVICE, ComponentStatus.DELETING}),
    ComponentStatus.IN_SERVICE: frozenset({ComponentStatus.UPDATING, ComponentStatus.DELETING}),
    ComponentStatus.FAILED: frozenset({ComponentStatus.UPDATING, ComponentStatus.DELETING}),
    ComponentStatus.DELETING: frozenset(),
}


@dataclass(frozen=True)
class ModelRow:
    name: str
    spec: dict[str, Any]  # CreateModelInput as sent (validated)
    imported_model: str  # the imported model's name (or the name its import job will register)
    import_job_id: str | None
    created_at: float


@dataclass(frozen=True)
class EndpointConfigRow:
    name: str
    spec: dict[str, Any]  # CreateEndpointConfigInput as sent (validated)
    created_at: float


@dataclass(frozen=True)
class EndpointRow:
    name: str
    config_name: str
    status: EndpointStatus
    failure_reason: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ComponentRow:
    name: str
    endpoint_name: str
    variant_name: str
    spec: dict[str, Any]  # the validated Specification (ModelName, ComputeResourceRequirements, ...)
    copy_count: int  # RuntimeConfig.CopyCount: copies kept running for it
    status: ComponentStatus
    failure_reason: str | None
    created_at: float
    updated_at: float

    @property
    def model_name(self) -> str:
        return str(self.spec.get("ModelName") or "")


def _component(row: Any) -> ComponentRow:
    return ComponentRow(
        row.name,
        row.endpoint_name,
        row.variant_name,
        json.loads(row.spec),
        row.copy_count,
        ComponentStatus(row.status),
        row.failure_reason,
        row.created_at,
        row.updated_at,
    )


def _model(row: Any) -> ModelRow:
    return ModelRow(row.name, json.loads(row.spec), row.imported_model, row.import_job_id, row.created_at)


def _config(row: Any) -> EndpointConfigRow:
    return EndpointConfigRow(row.name, json.loads(row.spec), row.created_at)


def _endpoint(row: Any) -> EndpointRow:
    return EndpointRow(
        row.name,
        row.config_name,
        EndpointStatus(row.status),
        row.failure_reason,
        row.created_at,
        row.updated_at,
    )


class SageMakerStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- models -------------------------------------------------------------------------

    def add_model(self, row: ModelRow, *, already_exists: str) -> None:
        self._insert(
            sagemaker_models,
            already_exists,
            name=row.name,
            spec=json.dumps(row.spec),
            imported_model=row.imported_model,
            import_job_id=row.import_job_id,
            created_at=row.created_at,
        )

    def model(self, name: str) -> ModelRow | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(sagemaker_models).where(sagemaker_models.c.name == name)).first()
        return _model(row) if row else None

    def models(self) -> list[ModelRow]:
        with self.db.engine.connect() as conn:
            return [_model(r) for r in conn.execute(sa.select(sagemaker_models))]

    def delete_model(self, name: str) -> bool:
        return self._delete(sagemaker_models, name)

    # -- endpoint configs ---------------------------------------------------------------

    def add_config(self, row: EndpointConfigRow, *, already_exists: str) -> None:
        self._insert(
            sagemaker_endpoint_configs,
            already_exists,
            name=row.name,
            spec=json.dumps(row.spec),
            created_at=row.created_at,
        )

    def config(self, name: str) -> EndpointConfigRow | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                sa.select(sagemaker_endpoint_configs).where(sagemaker_endpoint_configs.c.name == name)
            ).first()
        return _config(row) if row else None

    def configs(self) -> list[EndpointConfigRow]:
        with self.db.engine.connect() as conn:
            return [_config(r) for r in conn.execute(sa.select(sagemaker_endpoint_configs))]

    def delete_config(self, name: str) -> bool:
        return self._delete(sagemaker_endpoint_configs, name)

    # -- endpoints ----------------------------------------------------------------------

    def add_endpoint(self, name: str, config_name: str, *, already_exists: str) -> EndpointRow:
        now = time.time()
        self._insert(
            sagemaker_endpoints,
            already_exists,
            name=name,
            config_name=config_name,
            status=EndpointStatus.CREATING.value,
            failure_reason=None,
            created_at=now,
            updated_at=now,
        )
        return EndpointRow(name, config_name, EndpointStatus.CREATING, None, now, now)

    def endpoint(self, name: str) -> EndpointRow | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                sa.select(sagemaker_endpoints).where(sagemaker_endpoints.c.name == name)
            ).first()
        return _endpoint(row) if row else None

    def endpoints(self) -> list[EndpointRow]:
        with self.db.engine.connect() as conn:
            return [_endpoint(r) for r in conn.execute(sa.select(sagemaker_endpoints))]

    def set_endpoint(
        self,
        name: str,
        status: EndpointStatus,
        *,
        config_name: str | None = None,
        failure_reason: str | None = None,
    ) -> None:
        """Move an endpoint to ``status`` (and, on a finished update, to its new config)."""
        values: dict[str, Any] = {
            "status": status.value,
            "failure_reason": failure_reason,
            "updated_at": time.time(),
        }
        if config_name is not None:
            values["config_name"] = config_name
        with self.db.begin() as conn:
            conn.execute(
                sagemaker_endpoints.update().where(sagemaker_endpoints.c.name == name).values(**values)
            )

    def delete_endpoint(self, name: str) -> bool:
        return self._delete(sagemaker_endpoints, name)

    # -- inference components -------------------------------------------------------------

    def add_component(
        self,
        name: str,
        endpoint: str,
        variant: str,
        spec: dict[str, Any],
        copy_count: int,
        *,
        already_exists: str,
    ) -> None:
        now = time.time()
        self._insert(
            sagemaker_inference_components,
            already_exists,
            name=name,
            endpoint_name=endpoint,
            variant_name=variant,
            spec=json.dumps(spec),
            copy_count=copy_count,
            status=ComponentStatus.CREATING.value,
            failure_reason=None,
            created_at=now,
            updated_at=now,
        )

    def component(self, name: str) -> ComponentRow | None:
        t = sagemaker_inference_components
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name)).first()
        return _component(row) if row else None

    def components(self, endpoint: str | None = None) -> list[ComponentRow]:
        t = sagemaker_inference_components
        query = sa.select(t) if endpoint is None else sa.select(t).where(t.c.endpoint_name == endpoint)
        with self.db.engine.connect() as conn:
            return [_component(r) for r in conn.execute(query)]

    def set_component(
        self,
        name: str,
        status: ComponentStatus,
        *,
        failure_reason: str | None = None,
        spec: dict[str, Any] | None = None,
        copy_count: int | None = None,
    ) -> None:
        """Move a component to ``status`` (and, on a finished deployment, to its new spec and copy count)."""
        values: dict[str, Any] = {
            "status": status.value,
            "failure_reason": failure_reason,
            "updated_at": time.time(),
        }
        if spec is not None:
            values["spec"] = json.dumps(spec)
        if copy_count is not None:
            values["copy_count"] = copy_count
        t = sagemaker_inference_components
        with self.db.begin() as conn:
            conn.execute(t.update().where(t.c.name == name).values(**values))

    def delete_component(self, name: str) -> bool:
        return self._delete(sagemaker_inference_components, name)

    # -- shared ---------------------------------------------------------------------------

    def _insert(self, table: sa.Table, already_exists: str, **values: Any) -> None:
        try:
            with self.db.begin() as conn:
                conn.execute(table.insert().values(**values))
        except IntegrityError:
            raise InvalidRequestError(already_exists) from None

    def _delete(self, table: sa.Table, name: str) -> bool:
        with self.db.begin() as conn:
            return bool(conn.execute(table.delete().where(table.c.name == name)).rowcount)
