"""SageMaker-compatible endpoints: models, endpoint configs, endpoints, and where an invocation goes.

A SageMaker *model* names an imported model (by name or ARN) in its container's ``ModelDataUrl``
or ``ModelDataSource``, or a folder / ``s3://`` URI that it imports. An *endpoint config* lists
production variants (model, weight, instance count or serverless concurrency). An *endpoint*
deploys a config: ``Creating`` -> ``InService`` once every variant's imported model exists and
its provisioned copies are up, or ``Failed`` with the reason. Invocations then go through the same
router, copies, throttling and metrics as Bedrock's runtime.

An endpoint whose config's variants name no model hosts *inference components* instead: each
component names a SageMaker model (``Specification.ModelName``) and keeps ``RuntimeConfig.CopyCount``
copies of its imported model; an invocation names the component (``InferenceComponentName``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, NotFoundError, OutcropError
from outcrop.registry.service import CreateImportJob, Registry
from outcrop.sagemaker import protocol as p
from outcrop.sagemaker.components import InferenceComponents, component_owner, model_processing
from outcrop.sagemaker.handlers import HandlerPool, check_handler
from outcrop.sagemaker.store import (
    EndpointConfigRow,
    EndpointRow,
    EndpointStatus,
    ModelRow,
    SageMakerStore,
)
from outcrop.sagemaker.templates import (
    HANDLER_ENV,
    INPUT_TEMPLATE_ENV,
    OUTPUT_TEMPLATE_ENV,
    Processing,
    check_template,
)
from outcrop.sagemaker.variants import (
    ConcurrencyGate,
    Target,
    VariantPlan,
    check_variants,
    pick_variant,
    plan_variant,
)
from outcrop.serving.service import Serving
from outcrop.store.db import Database
from outcrop.store.imports import ImportJobStatus, new_id

log = logging.getLogger("outcrop.sagemaker")

M = TypeVar("M", bound=BaseModel)

# How long a runtime lookup (endpoint -> variants -> models) is reused. Short: another gateway's
# UpdateEndpoint is seen within this; long enough that a busy endpoint costs no query per call.
TARGET_CACHE_SECONDS = 1.0
# How often each gateway re-reads which copies endpoints and components pin. Why 5 s: a
# DeleteEndpoint on another gateway of a shared fleet releases its copies within this; far below
# the idle window (300 s by default) that would otherwise stop them.
PIN_SYNC_SECONDS = 5.0
# How often a deploying endpoint checks on the import job its model started.
IMPORT_POLL_SECONDS = 0.5
# Why 1 hour: an import of a large model (tens of GB from S3) takes minutes, not hours; a job
# still running after this is stuck, and the endpoint should say so instead of Creating forever.
IMPORT_WAIT_SECONDS = 3600.0
_LOCATION_PREFIXES = ("/", "./", "../", "~", "file://", "s3://")
# SageMaker's own words when an endpoint that hosts inference components is invoked without naming one.
COMPONENT_REQUIRED = (
    "Inference Component Name header is required for endpoints to which you plan to deploy inference "
    "components. Please include Inference Component Name header or consider using SageMaker models."
)


@dataclass
class _Plan:
    variants: list[VariantPlan]
    imported: dict[str, str]  # variant name -> imported model name
    processing: dict[str, Processing]  # variant name -> its model's templates
    status: EndpointStatus
    failure_reason: str | None
    read_at: float
    hosts_components: bool = False  # its variants name no model: invocations name a component


def parse(model: type[M], body: dict[str, Any]) -> M:
    """A control-plane input, or a ValidationException in SageMaker's wording naming each member."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errs = exc.errors()
        parts = []
        for err in errs[:5]:
            where = ".".join(str(x) for x in err["loc"]) or "body"
            shown = "" if err["type"] == "missing" else f"Value {str(err.get('input'))[:80]!r} at "
            parts.append(f"{shown}'{where}' failed to satisfy constraint: {err['msg']}")
        raise InvalidRequestError(
            f"{len(errs)} validation error{'s' if len(errs) > 1 else ''} detected: " + "; ".join(parts)
        ) from None


class SageMakerService:
    def __init__(self, config: OutcropConfig, db: Database, registry: Registry, serving: Serving) -> None:
        self.config = config
        self.identity = config.aws
        self.store = SageMakerStore(db)
        self.registry = registry
        self.serving = serving
        self._plans: dict[str, _Plan] = {}
        self.components = InferenceComponents(self)
        self._gate = ConcurrencyGate()
        self.handlers = HandlerPool(config.sagemaker, config.resolved_data_dir / "logs" / "handlers")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._random = random.Random()
        self._pinned: dict[str, tuple[str, int]] = {}  # pin owner -> (imported model, copies)
        self._deploying: dict[
            str, tuple[str, int]
        ] = {}  # pins of deployments in progress (not in the store yet)
        self._pin_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Finish deployments a stopped gateway left Creating/Updating (this gateway takes them over)."""
        self._loop = asyncio.get_running_loop()
        for row in await asyncio.to_thread(self.store.endpoints):
            if row.status in (EndpointStatus.CREATING, EndpointStatus.UPDATING):
                self.spawn(self._deploy(row.name, row.config_name, row.status))
        await self.components.resume()
        self.spawn(self._pin_loop())

    async def stop(self) -> None:
        await self.handlers.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    # ------------------------------------------------------------------ pinned copies

    async def _pin_loop(self) -> None:
        while True:
            try:
                await self.sync_pins()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive a bad round (a store hiccup)
                log.exception("syncing SageMaker pinned copies failed")
            await asyncio.sleep(PIN_SYNC_SECONDS)

    async def sync_pins(self) -> None:
        """Pin what InService endpoints and components keep running, release the rest.

        ``InitialInstanceCount`` (``ProvisionedConcurrency``: one copy) of each model variant and
        ``CopyCount`` of each component are pinned in serving while the endpoint or component
        accepts invocations, so the idle autoscaler never stops them; deleting it releases them.
        Every gateway derives the same pins from the store, so a shared fleet keeps them too.
        """
        async with self._pin_lock:
            wanted = {**await asyncio.to_thread(self._wanted_pins), **self._deploying}
            for owner in set(self._pinned) - set(wanted):
                self.serving.unpin(owner)
                del self._pinned[owner]
            for owner, (model, copies) in wanted.items():
                if self._pinned.get(owner) == (model, copies):
                    continue
                try:
                    await self.serving.pin(owner, model, copies)
                except NotFoundError:  # the imported model was deleted: nothing to keep running
                    self.serving.unpin(owner)
                    self._pinned.pop(owner, None)
                    continue
                self._pinned[owner] = (model, copies)

    async def end_deployment(self, owner_prefix: str) -> None:
        """A deployment ended (either way): its pins now follow the store alone."""
        for owner in [o for o in self._deploying if o.startswith(owner_prefix)]:
            del self._deploying[owner]
        await self.sync_pins()

    def pinned(self) -> dict[str, tuple[str, int]]:
        """Pin owner -> (imported model, copies), as this gateway last synced them (for tests and stats)."""
        return dict(self._pinned)

    def _wanted_pins(self) -> dict[str, tuple[str, int]]:
        wanted: dict[str, tuple[str, int]] = {}
        models = {m.name: m for m in self.store.models()}
        for row in self.store.endpoints():
            config = self.store.config(row.config_name)
            if not row.status.accepts_invocations() or config is None:
                continue
            for spec in config.spec["ProductionVariants"]:
                plan = plan_variant(spec)
                model = models.get(plan.model_name)
                if plan.provisioned_copies and model is not None:
                    wanted[_variant_owner(row.name, plan.name)] = (
                        model.imported_model,
                        plan.provisioned_copies,
                    )
        for component in self.store.components():
            model = models.get(component.model_name)
            if component.status.accepts_invocations() and component.copy_count and model is not None:
                wanted[component_owner(component.name)] = (
                    model.imported_model,
                    component.copy_count,
                )
        return wanted

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` on the gateway's loop; callable from the loop or from a worker thread (the
        control plane runs its operations in threads so that store and S3 calls never block it)."""

        def launch() -> None:
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            launch()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(launch)
        else:
            coro.close()
            raise RuntimeError("SageMakerService.start() was not called")

    # ------------------------------------------------------------------ ARNs

    def arn(self, kind: str, name: str) -> str:
        """``kind`` is SageMaker's resource type: model, endpoint-config, endpoint, inference-component."""
        return f"arn:aws:sagemaker:{self.identity.region}:{self.identity.account_id}:{kind}/{name.lower()}"

    # ------------------------------------------------------------------ models

    def create_model(self, inp: p.CreateModelInput) -> str:
        containers = inp.Containers or ([inp.PrimaryContainer] if inp.PrimaryContainer else [])
        if len(containers) != 1:
            raise InvalidRequestError(
                f"Model '{inp.ModelName}' has {len(containers)} containers; Outcrop serves exactly one per model "
                "(PrimaryContainer, or Containers with one item). Inference pipelines are not supported.",
                param="PrimaryContainer",
            )
        container = containers[0]
        source = container.ModelDataUrl or (
            container.ModelDataSource.S3DataSource.S3Uri
            if container.ModelDataSource and container.ModelDataSource.S3DataSource
            else None
        )
        if not source:
            raise InvalidRequestError(
                f"Model '{inp.ModelName}' names no model data: set PrimaryContainer.ModelDataUrl (or "
                "ModelDataSource.S3DataSource.S3Uri) to an imported model's name or ARN, or to a folder / "
                "s3:// URI of a Hugging Face safetensors model to import.",
                param="PrimaryContainer.ModelDataUrl",
            )
        for variable in (INPUT_TEMPLATE_ENV, OUTPUT_TEMPLATE_ENV):
            if variable in container.Environment:
                check_template(variable, container.Environment[variable])
        if HANDLER_ENV in container.Environment:
            check_handler(self.config.sagemaker, container.Environment[HANDLER_ENV])
            if INPUT_TEMPLATE_ENV in container.Environment or OUTPUT_TEMPLATE_ENV in container.Environment:
                raise InvalidRequestError(
                    f"Model '{inp.ModelName}' sets both {HANDLER_ENV} and a template; use one: the handler's "
                    "input_fn/output_fn can do what the templates do.",
                    param=f"PrimaryContainer.Environment.{HANDLER_ENV}",
                )
        arn = self.arn("model", inp.ModelName)
        if self.store.model(inp.ModelName) is not None:
            raise InvalidRequestError(f'Cannot create already existing model "{arn}".', param="ModelName")
        imported, job_id = self._imported_model_for(inp.ModelName, source)
        self.store.add_model(
            ModelRow(inp.ModelName, inp.model_dump(exclude_none=True), imported, job_id, time.time()),
            already_exists=f'Cannot create already existing model "{arn}".',
        )
        return arn

    def _imported_model_for(self, model_name: str, source: str) -> tuple[str, str | None]:
        """The imported model a container names, or the import job that will make it."""
        try:
            return self.registry.get_model(source).name, None
        except (NotFoundError, InvalidRequestError):
            pass
        if not source.startswith(_LOCATION_PREFIXES):
            raise InvalidRequestError(
                f"ModelDataUrl '{source}' names no imported model. Use an imported model's name or ARN "
                "(ListImportedModels / `outcrop models`), or a folder or s3:// URI to import it from.",
                param="PrimaryContainer.ModelDataUrl",
            )
        job = self.registry.create_import_job(
            CreateImportJob(
                job_name=f"sagemaker-{model_name}-{new_id()[:6]}"[:63],
                imported_model_name=model_name,
                source_uri=source,
            )
        )
        log.info("sagemaker model imports its data", extra={"model": model_name, "job": job.id})
        return model_name, job.id

    def describe_model(self, name: str) -> dict[str, Any]:
        row = self.model_row(name)
        spec = dict(row.spec)
        spec.pop("Tags", None)
        return {**spec, "ModelArn": self.arn("model", row.name), "CreationTime": row.created_at}

    def list_models(self, inp: p.ListInput) -> dict[str, Any]:
        items = [
            {"ModelName": r.name, "ModelArn": self.arn("model", r.name), "CreationTime": r.created_at}
            for r in self.store.models()
        ]
        return p.page(items, "Models", "ModelName", inp)

    def delete_model(self, name: str) -> None:
        if not self.store.delete_model(name):
            raise InvalidRequestError(f'Could not find model "{self.arn("model", name)}".', param="ModelName")

    def model_row(self, name: str) -> ModelRow:
        """The SageMaker model, or ValidationException "Could not find model"."""
        row = self.store.model(name)
        if row is None:
            raise InvalidRequestError(f'Could not find model "{self.arn("model", name)}".', param="ModelName")
        return row

    # ------------------------------------------------------------------ endpoint configs

    def create_endpoint_config(self, inp: p.CreateEndpointConfigInput) -> str:
        variants = [v.model_dump(exclude_none=True) for v in inp.ProductionVariants]
        check_variants(inp.EndpointConfigName, variants)
        for v in variants:
            if v.get("ModelName"):
                self.model_row(v["ModelName"])  # SageMaker checks the models exist now, not at deploy time
        arn = self.arn("endpoint-config", inp.EndpointConfigName)
        self.store.add_config(
            EndpointConfigRow(inp.EndpointConfigName, inp.model_dump(exclude_none=True), time.time()),
            already_exists=f'Cannot create already existing endpoint configuration "{arn}".',
        )
        return arn

    def describe_endpoint_config(self, name: str) -> dict[str, Any]:
        row = self._config(name)
        return {
            "EndpointConfigName": row.name,
            "EndpointConfigArn": self.arn("endpoint-config", row.name),
            "ProductionVariants": row.spec["ProductionVariants"],
            "CreationTime": row.created_at,
        }

    def list_endpoint_configs(self, inp: p.ListInput) -> dict[str, Any]:
        items = [
            {
                "EndpointConfigName": r.name,
                "EndpointConfigArn": self.arn("endpoint-config", r.name),
                "CreationTime": r.created_at,
            }
            for r in self.store.configs()
        ]
        return p.page(items, "EndpointConfigs", "EndpointConfigName", inp)

    def delete_endpoint_config(self, name: str) -> None:
        if not self.store.delete_config(name):
            raise self._no_config(name)

    def _config(self, name: str) -> EndpointConfigRow:
        row = self.store.config(name)
        if row is None:
            raise self._no_config(name)
        return row

    def _no_config(self, name: str) -> InvalidRequestError:
        return InvalidRequestError(
            f'Could not find endpoint configuration "{self.arn("endpoint-config", name)}".',
            param="EndpointConfigName",
        )

    # ------------------------------------------------------------------ endpoints

    def create_endpoint(self, inp: p.CreateEndpointInput) -> str:
        self._config(inp.EndpointConfigName)
        arn = self.arn("endpoint", inp.EndpointName)
        self.store.add_endpoint(
            inp.EndpointName,
            inp.EndpointConfigName,
            already_exists=f'Cannot create already existing endpoint "{arn}".',
        )
        self.spawn(self._deploy(inp.EndpointName, inp.EndpointConfigName, EndpointStatus.CREATING))
        return arn

    def update_endpoint(self, inp: p.UpdateEndpointInput) -> str:
        row = self.endpoint_row(inp.EndpointName)
        config = self._config(inp.EndpointConfigName)
        hosts = {v.name for v in map(plan_variant, config.spec["ProductionVariants"]) if v.hosts_components}
        stranded = [c.name for c in self.store.components(row.name) if c.variant_name not in hosts]
        if stranded:
            raise InvalidRequestError(
                f"Endpoint '{row.name}' has inference components ({', '.join(sorted(stranded))}) on variants that "
                f"endpoint config '{config.name}' does not host components on; delete them first "
                "(DeleteInferenceComponent), or use a config whose same-named variants name no model.",
                param="EndpointConfigName",
            )
        if not row.status.is_terminal():
            raise InvalidRequestError(
                f'Cannot update in-progress endpoint "{self.arn("endpoint", row.name)}" (it is {row.status}); '
                "wait until DescribeEndpoint says InService or Failed.",
                param="EndpointName",
            )
        self.store.set_endpoint(row.name, EndpointStatus.UPDATING, failure_reason=None)
        self._plans.pop(row.name, None)
        self.spawn(self._deploy(row.name, inp.EndpointConfigName, EndpointStatus.UPDATING))
        return self.arn("endpoint", row.name)

    def describe_endpoint(self, name: str) -> dict[str, Any]:
        row = self.endpoint_row(name)
        out: dict[str, Any] = {
            "EndpointName": row.name,
            "EndpointArn": self.arn("endpoint", row.name),
            "EndpointConfigName": row.config_name,
            "EndpointStatus": row.status.value,
            "CreationTime": row.created_at,
            "LastModifiedTime": row.updated_at,
        }
        if row.failure_reason:
            out["FailureReason"] = row.failure_reason
        config = self.store.config(row.config_name)
        if config is not None:
            out["ProductionVariants"] = [
                self._variant_summary(v, row) for v in config.spec["ProductionVariants"]
            ]
        return out

    def _variant_summary(self, spec: dict[str, Any], row: EndpointRow) -> dict[str, Any]:
        plan = plan_variant(spec)
        live = row.status.accepts_invocations()
        summary: dict[str, Any] = {
            "VariantName": plan.name,
            "CurrentWeight": plan.weight,
            "DesiredWeight": plan.weight,
        }
        if plan.serverless:
            summary["CurrentServerlessConfig"] = summary["DesiredServerlessConfig"] = spec["ServerlessConfig"]
        else:
            summary["CurrentInstanceCount"] = plan.provisioned_copies if live else 0
            summary["DesiredInstanceCount"] = plan.provisioned_copies
        return summary

    def list_endpoints(self, inp: p.ListInput) -> dict[str, Any]:
        items = [
            {
                "EndpointName": r.name,
                "EndpointArn": self.arn("endpoint", r.name),
                "CreationTime": r.created_at,
                "LastModifiedTime": r.updated_at,
                "EndpointStatus": r.status.value,
            }
            for r in self.store.endpoints()
            if inp.StatusEquals is None or r.status.value == inp.StatusEquals
        ]
        return p.page(items, "Endpoints", "EndpointName", inp)

    def delete_endpoint(self, name: str) -> None:
        """Forget the endpoint and its inference components, and release the copies they pinned: the
        copies stay while busy (Bedrock callers may share them) and stop after the idle window."""
        if not self.store.delete_endpoint(name):
            raise self._no_endpoint(name)
        self.components.forget_endpoint(name)
        self._plans.pop(name, None)
        self.spawn(self.sync_pins())  # releases its copies

    def endpoint_row(self, name: str) -> EndpointRow:
        """The endpoint, or ValidationException "Could not find endpoint"."""
        row = self.store.endpoint(name)
        if row is None:
            raise self._no_endpoint(name)
        return row

    def _no_endpoint(self, name: str) -> InvalidRequestError:
        return InvalidRequestError(
            f'Could not find endpoint "{self.arn("endpoint", name)}".', param="EndpointName"
        )

    async def _deploy(self, name: str, config_name: str, status: EndpointStatus) -> None:
        """Check every variant's model and start its provisioned copies; then InService or Failed."""
        try:
            reason = await self._deploy_variants(name, config_name)
        except asyncio.CancelledError:
            raise
        except OutcropError as exc:
            reason = exc.message
        except Exception as exc:  # a bug: the endpoint says so instead of Creating forever
            log.exception("endpoint deployment failed", extra={"endpoint": name})
            reason = f"Internal error while deploying ({type(exc).__name__}); see the server log."
        if reason is None:
            await asyncio.to_thread(
                self.store.set_endpoint, name, EndpointStatus.IN_SERVICE, config_name=config_name
            )
        elif status is EndpointStatus.UPDATING:
            # As SageMaker does, a failed update rolls back: the old config keeps serving.
            await asyncio.to_thread(
                self.store.set_endpoint,
                name,
                EndpointStatus.IN_SERVICE,
                failure_reason=f"Update to '{config_name}' failed and was rolled back: {reason}",
            )
        else:
            await asyncio.to_thread(
                self.store.set_endpoint, name, EndpointStatus.FAILED, failure_reason=reason
            )
        self._plans.pop(name, None)
        await self.end_deployment(_variant_owner(name, ""))
        log.info("endpoint deployed", extra={"endpoint": name, "config": config_name, "failure": reason})

    async def _deploy_variants(self, endpoint: str, config_name: str) -> str | None:
        config = await asyncio.to_thread(self.store.config, config_name)
        if config is None:
            return f"Endpoint configuration '{config_name}' was deleted before the endpoint was deployed."
        for spec in config.spec["ProductionVariants"]:
            plan = plan_variant(spec)
            if plan.hosts_components:
                continue  # its inference components deploy their own models
            reason = await self.ready_model(
                plan.model_name, plan.provisioned_copies, _variant_owner(endpoint, plan.name)
            )
            if reason is not None:
                return f"Variant '{plan.name}': {reason}"
        return None

    async def ready_model(self, model_name: str, copies: int, owner: str) -> str | None:
        """Wait for the SageMaker model's import (if it has one) and start ``copies`` copies of its
        imported model, pinned for ``owner`` from the start (an idle window shorter than a copy's
        start must not stop them); None when done, else why not."""
        model = await asyncio.to_thread(self.store.model, model_name)
        if model is None:
            return f"model '{model_name}' no longer exists; create it again."
        if model.import_job_id is not None:
            reason = await self._wait_for_import(model)
            if reason is not None:
                return reason
        try:
            await self.serving.resolve(model.imported_model)
        except NotFoundError:
            return (
                f"model '{model.name}' names imported model '{model.imported_model}', "
                "which does not exist (deleted?). Import it again and create a new model."
            )
        if copies:
            self._deploying[owner] = (model.imported_model, copies)
            await self.sync_pins()
            try:
                await self.serving.warm(model.imported_model, copies)
            except OutcropError as exc:
                return f"its copies of '{model.imported_model}' did not start: {exc.message}"
        return None

    async def _wait_for_import(self, model: ModelRow) -> str | None:
        deadline = time.monotonic() + IMPORT_WAIT_SECONDS
        assert model.import_job_id is not None
        while time.monotonic() < deadline:
            job = await asyncio.to_thread(self.registry.get_job, model.import_job_id)
            if job.status is ImportJobStatus.COMPLETED:
                return None
            if job.status is ImportJobStatus.FAILED:
                return f"importing model '{model.name}' from {job.source_uri} failed: {job.failure_message}"
            await asyncio.sleep(IMPORT_POLL_SECONDS)
        return f"importing model '{model.name}' did not finish within {IMPORT_WAIT_SECONDS:.0f} s."

    # ------------------------------------------------------------------ runtime

    def not_found(self, name: str) -> InvalidRequestError:
        """SageMaker runtime's own wording for an unknown endpoint."""
        return InvalidRequestError(
            f"Endpoint {name} of account {self.identity.account_id} not found. Check the name (ListEndpoints) "
            "or create it with CreateEndpoint.",
            param="EndpointName",
        )

    async def target(self, endpoint: str, target_variant: str | None, component: str | None = None) -> Target:
        """Where an invocation of ``endpoint`` goes (ValidationError if it cannot be invoked now)."""
        if component:
            return await self.components.target(endpoint, component)
        plan = self._plans.get(endpoint)
        if plan is None or time.monotonic() - plan.read_at > TARGET_CACHE_SECONDS:
            plan = await asyncio.to_thread(self._read_plan, endpoint)
            self._plans[endpoint] = plan
        if not plan.status.accepts_invocations():
            if plan.status is EndpointStatus.FAILED:
                raise InvalidRequestError(
                    f"Endpoint {endpoint} is Failed ({plan.failure_reason}); fix the cause and call UpdateEndpoint, "
                    "or delete and create it again.",
                    param="EndpointName",
                )
            raise InvalidRequestError(
                f"Endpoint {endpoint} is {plan.status.value}, not InService; wait for it "
                "(boto3: sagemaker.get_waiter('endpoint_in_service').wait(EndpointName=...)).",
                param="EndpointName",
            )
        if plan.hosts_components:
            raise InvalidRequestError(COMPONENT_REQUIRED, param="InferenceComponentName")
        variant = pick_variant(endpoint, plan.variants, target_variant, self._random.random())
        return Target(endpoint, variant, plan.imported[variant.name], plan.processing[variant.name])

    def _read_plan(self, endpoint: str) -> _Plan:
        row = self.store.endpoint(endpoint)
        if row is None:
            raise self.not_found(endpoint)
        config = self.store.config(row.config_name)
        variants: list[VariantPlan] = []
        imported: dict[str, str] = {}
        processing: dict[str, Processing] = {}
        hosts_components = False
        for spec in config.spec["ProductionVariants"] if config else []:
            plan = plan_variant(spec)
            if plan.hosts_components:
                hosts_components = True
                continue
            model = self.store.model(plan.model_name)
            if model is None:
                continue  # deleted after the endpoint was deployed: its traffic goes to the others
            variants.append(plan)
            imported[plan.name] = model.imported_model
            processing[plan.name] = model_processing(model)
        status, reason = row.status, row.failure_reason
        if (
            row.status.accepts_invocations()
            and not hosts_components
            and not any(v.weight > 0 for v in variants)
        ):
            status, reason = EndpointStatus.FAILED, "its config or models were deleted"
        return _Plan(variants, imported, processing, status, reason, time.monotonic(), hosts_components)

    def admit(self, target: Target) -> AbstractAsyncContextManager[None]:
        """Hold one of the variant's ``MaxConcurrency`` slots for the call (ThrottlingException if none)."""
        return self._gate.hold(target.endpoint, target.variant)

    def endpoint_summaries(self) -> list[dict[str, Any]]:
        """For the CLI and the console: each endpoint with its variants' imported models."""
        out = []
        for row in self.store.endpoints():
            config = self.store.config(row.config_name)
            variants = []
            for spec in config.spec["ProductionVariants"] if config else []:
                model = self.store.model(spec.get("ModelName", ""))
                variants.append(
                    {
                        "variant": spec["VariantName"],
                        "model": spec.get("ModelName"),
                        "imported_model": model.imported_model if model else None,
                        "weight": plan_variant(spec).weight,
                    }
                )
            components = [
                {
                    "component": c.name,
                    "variant": c.variant_name,
                    "model": c.model_name,
                    "copies": c.copy_count,
                    "status": c.status.value,
                }
                for c in self.store.components(row.name)
            ]
            out.append(
                {
                    "name": row.name,
                    "status": row.status.value,
                    "config": row.config_name,
                    "failure_reason": row.failure_reason,
                    "variants": variants,
                    "components": components,
                }
            )
        return out


def _variant_owner(endpoint: str, variant: str) -> str:
    """Who pins a model variant's copies in serving (see SageMakerService.sync_pins)."""
    return f"sagemaker:endpoint/{endpoint}/{variant}"
