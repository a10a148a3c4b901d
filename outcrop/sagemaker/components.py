"""SageMaker inference components: several models on one endpoint, each with its own copies.

An endpoint whose config's variant names no model *hosts* components. Each component names a
SageMaker model (``Specification.ModelName``) and keeps ``RuntimeConfig.CopyCount`` copies of its
imported model (pinned, see :meth:`SageMakerService.sync_pins`): ``Creating`` -> ``InService``,
or ``Failed`` with the reason; an update deploys while the old one answers and rolls back on
failure. An invocation names the component (``InferenceComponentName``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.sagemaker import protocol as p
from outcrop.sagemaker.store import ComponentRow, ComponentStatus, EndpointRow, ModelRow
from outcrop.sagemaker.templates import Processing
from outcrop.sagemaker.variants import Target, VariantPlan, plan_variant
from outcrop.serving.copies import CopyStatus

if TYPE_CHECKING:
    from outcrop.sagemaker.service import SageMakerService

log = logging.getLogger("outcrop.sagemaker")

# How long a runtime lookup (component -> model) is reused, as for endpoints.
TARGET_CACHE_SECONDS = 1.0


@dataclass
class _Plan:
    row: ComponentRow
    variant: VariantPlan
    imported_model: str
    processing: Processing
    read_at: float


def component_owner(component: str) -> str:
    return f"sagemaker:inference-component/{component}"


def _spec_summary(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored Specification as DescribeInferenceComponent's InferenceComponentSpecificationSummary."""
    out = dict(spec)
    container = out.get("Container")
    if isinstance(container, dict):
        container = dict(container)
        image = container.pop("Image", None)
        if image:
            container["DeployedImage"] = {"SpecifiedImage": image, "ResolvedImage": image}
        out["Container"] = container
    return out


def model_processing(model: ModelRow) -> Processing:
    """The pre/post-processing a SageMaker model's container Environment asks for."""
    container = model.spec.get("PrimaryContainer") or (model.spec.get("Containers") or [{}])[0]
    return Processing.from_environment(model.name, container.get("Environment") or {})


class InferenceComponents:
    """The inference-component operations of one :class:`SageMakerService` (its store, serving, pins)."""

    def __init__(self, svc: SageMakerService) -> None:
        self.svc = svc
        self._plans: dict[str, _Plan] = {}

    async def resume(self) -> None:
        """At start: finish creations a stopped gateway left, roll back its interrupted updates."""
        for component in await asyncio.to_thread(self.svc.store.components):
            if component.status is ComponentStatus.CREATING:
                self.svc.spawn(self._deploy(component.name, component.spec, component.copy_count, None))
            elif component.status is ComponentStatus.UPDATING:
                # The new specification was held by the gateway that stopped: the old one stays.
                await asyncio.to_thread(
                    self.svc.store.set_component,
                    component.name,
                    ComponentStatus.IN_SERVICE,
                    failure_reason="An update was interrupted by a server restart and rolled back; "
                    "call UpdateInferenceComponent again.",
                )
            elif component.status is ComponentStatus.DELETING:
                await asyncio.to_thread(self.svc.store.delete_component, component.name)

    def forget_endpoint(self, endpoint: str) -> None:
        """DeleteEndpoint: its components go with it."""
        for component in self.svc.store.components(endpoint):
            self.svc.store.delete_component(component.name)
            self._plans.pop(component.name, None)

    def create(self, inp: p.CreateInferenceComponentInput) -> str:
        name = inp.InferenceComponentName
        spec = self._component_spec(inp.Specification, inp.Specifications)
        if spec is None:
            raise InvalidRequestError(
                f"Inference component '{name}' needs a Specification naming its model "
                "(Specification.ModelName: a model made with CreateModel).",
                param="Specification",
            )
        if inp.RuntimeConfig is None:
            raise InvalidRequestError(
                f"Inference component '{name}' needs RuntimeConfig.CopyCount: how many copies of its model "
                "to keep running (0 = start one on the first invocation).",
                param="RuntimeConfig",
            )
        endpoint = self.svc.endpoint_row(inp.EndpointName)
        if not endpoint.status.accepts_invocations():
            raise InvalidRequestError(
                f'Endpoint "{self.svc.arn("endpoint", endpoint.name)}" is {endpoint.status.value}; add inference '
                "components once it is InService (sagemaker.get_waiter('endpoint_in_service')).",
                param="EndpointName",
            )
        variant = self._hosting_variant(endpoint, inp.VariantName)
        self.svc.model_row(spec["ModelName"])
        arn = self.svc.arn("inference-component", name)
        self.svc.store.add_component(
            name,
            endpoint.name,
            variant,
            spec,
            inp.RuntimeConfig.CopyCount,
            already_exists=f'Cannot create already existing inference component "{arn}".',
        )
        self.svc.spawn(self._deploy(name, spec, inp.RuntimeConfig.CopyCount, None))
        return arn

    def _component_spec(
        self, spec: p.ComponentSpecification | None, specs: list[p.ComponentSpecification] | None
    ) -> dict[str, Any] | None:
        """The one Specification as stored, or None if none was given."""
        if specs:
            if spec is not None or len(specs) != 1:
                raise InvalidRequestError(
                    "Give one Specification; Specifications with several instance types is not supported "
                    "(Outcrop places copies by memory, not instance type).",
                    param="Specifications",
                )
            spec = specs[0]
        if spec is None:
            return None
        if spec.BaseInferenceComponentName:
            raise InvalidRequestError(
                "Adapter inference components (Specification.BaseInferenceComponentName) are not supported; "
                "merge the adapter into the model, import it, and give it its own component.",
                param="Specification.BaseInferenceComponentName",
            )
        if not spec.ModelName:
            raise InvalidRequestError(
                "Specification.ModelName is required: name a model made with CreateModel (its container "
                "names the imported model). Outcrop runs no containers, so a Container alone cannot serve.",
                param="Specification.ModelName",
            )
        return spec.model_dump(exclude_none=True)

    def _hosting_variant(self, endpoint: EndpointRow, variant_name: str | None) -> str:
        """The endpoint's variant a new component goes on (it must name no model)."""
        config = self.svc.store.config(endpoint.config_name)
        plans = [plan_variant(v) for v in config.spec["ProductionVariants"]] if config else []
        if variant_name:
            found = next((v for v in plans if v.name == variant_name), None)
            if found is None:
                names = ", ".join(v.name for v in plans) or "none"
                raise InvalidRequestError(
                    f"VariantName '{variant_name}' is not a variant of endpoint '{endpoint.name}'; its variants: "
                    f"{names}.",
                    param="VariantName",
                )
            hosts = [found] if found.hosts_components else []
        else:
            hosts = [v for v in plans if v.hosts_components]
        if not hosts:
            raise InvalidRequestError(
                f"Endpoint '{endpoint.name}' serves models through its variants, so it cannot host inference "
                "components. Create an endpoint whose config's variant names no ModelName (VariantName, "
                "InstanceType, InitialInstanceCount only) and add components to it.",
                param="EndpointName",
            )
        if len(hosts) > 1:
            raise InvalidRequestError(
                f"Endpoint '{endpoint.name}' has variants {', '.join(v.name for v in hosts)}; name the one for "
                "this component in VariantName.",
                param="VariantName",
            )
        return hosts[0].name

    def describe(self, name: str) -> dict[str, Any]:
        row = self.row(name)
        out: dict[str, Any] = {
            "InferenceComponentName": row.name,
            "InferenceComponentArn": self.svc.arn("inference-component", row.name),
            "EndpointName": row.endpoint_name,
            "EndpointArn": self.svc.arn("endpoint", row.endpoint_name),
            "VariantName": row.variant_name,
            "Specification": _spec_summary(row.spec),
            "RuntimeConfig": {
                "DesiredCopyCount": row.copy_count,
                "CurrentCopyCount": self._current_copies(row),
            },
            "CreationTime": row.created_at,
            "LastModifiedTime": row.updated_at,
            "InferenceComponentStatus": row.status.value,
        }
        if row.failure_reason:
            out["FailureReason"] = row.failure_reason[:1024]
        return out

    def _current_copies(self, row: ComponentRow) -> int:
        """Ready copies of the component's imported model (shared with anything else serving it)."""
        if not row.status.accepts_invocations():
            return 0
        model = self.svc.store.model(row.model_name)
        if model is None:
            return 0
        return sum(
            1
            for c in self.svc.serving.copies()
            if c.model_name == model.imported_model and c.state is CopyStatus.READY
        )

    def list(self, inp: p.ListInferenceComponentsInput) -> dict[str, Any]:
        items = [
            {
                "InferenceComponentName": r.name,
                "InferenceComponentArn": self.svc.arn("inference-component", r.name),
                "EndpointName": r.endpoint_name,
                "EndpointArn": self.svc.arn("endpoint", r.endpoint_name),
                "VariantName": r.variant_name,
                "InferenceComponentStatus": r.status.value,
                "CreationTime": r.created_at,
                "LastModifiedTime": r.updated_at,
            }
            for r in self.svc.store.components(inp.EndpointNameEquals)
            if (inp.StatusEquals is None or r.status.value == inp.StatusEquals)
            and (inp.VariantNameEquals is None or r.variant_name == inp.VariantNameEquals)
        ]
        return p.page(items, "InferenceComponents", "InferenceComponentName", inp, "InferenceComponentStatus")

    def update(self, inp: p.UpdateInferenceComponentInput) -> str:
        row = self.row(inp.InferenceComponentName)
        arn = self.svc.arn("inference-component", row.name)
        if inp.Specification is None and not inp.Specifications and inp.RuntimeConfig is None:
            raise InvalidRequestError(
                f"UpdateInferenceComponent of '{row.name}' changes nothing; give a Specification and/or "
                "RuntimeConfig.CopyCount.",
                param="Specification",
            )
        if not row.status.is_terminal():
            raise InvalidRequestError(
                f'Cannot update in-progress inference component "{arn}" (it is {row.status.value}); wait '
                "until DescribeInferenceComponent says InService or Failed.",
                param="InferenceComponentName",
            )
        spec = self._component_spec(inp.Specification, inp.Specifications) or row.spec
        self.svc.model_row(spec["ModelName"])
        copy_count = inp.RuntimeConfig.CopyCount if inp.RuntimeConfig is not None else row.copy_count
        self.svc.store.set_component(row.name, ComponentStatus.UPDATING, failure_reason=None)
        self._plans.pop(row.name, None)
        self.svc.spawn(self._deploy(row.name, spec, copy_count, row))
        return arn

    def delete(self, name: str) -> None:
        """Forget the component and release its copies (they stop after the idle window, as for endpoints)."""
        row = self.row(name)
        self.svc.store.set_component(row.name, ComponentStatus.DELETING, failure_reason=None)
        self.svc.store.delete_component(row.name)
        self._plans.pop(row.name, None)
        self.svc.spawn(self.svc.sync_pins())  # releases its copies

    def row(self, name: str) -> ComponentRow:
        row = self.svc.store.component(name)
        if row is None:
            raise InvalidRequestError(
                f'Could not find inference component "{self.svc.arn("inference-component", name)}".',
                param="InferenceComponentName",
            )
        return row

    async def _deploy(
        self, name: str, spec: dict[str, Any], copy_count: int, previous: ComponentRow | None
    ) -> None:
        """Start the component's copies; then InService, or Failed (an update of a serving one rolls back)."""
        try:
            reason = await self.svc.ready_model(str(spec["ModelName"]), copy_count, component_owner(name))
        except asyncio.CancelledError:
            raise
        except OutcropError as exc:
            reason = exc.message
        except Exception as exc:  # a bug: the component says so instead of Creating forever
            log.exception("inference component deployment failed", extra={"component": name})
            reason = f"Internal error while deploying ({type(exc).__name__}); see the server log."
        if reason is None:
            await asyncio.to_thread(
                self.svc.store.set_component,
                name,
                ComponentStatus.IN_SERVICE,
                spec=spec,
                copy_count=copy_count,
            )
        elif previous is not None and previous.status is ComponentStatus.IN_SERVICE:
            await asyncio.to_thread(
                self.svc.store.set_component,
                name,
                ComponentStatus.IN_SERVICE,
                failure_reason=f"Update failed and was rolled back: {reason}",
            )
        else:
            await asyncio.to_thread(
                self.svc.store.set_component,
                name,
                ComponentStatus.FAILED,
                failure_reason=reason,
                spec=spec,
                copy_count=copy_count,
            )
        self._plans.pop(name, None)
        await self.svc.end_deployment(component_owner(name))
        log.info("inference component deployed", extra={"component": name, "failure": reason})

    async def target(self, endpoint: str, component: str) -> Target:
        plan = self._plans.get(component)
        stale = plan is None or time.monotonic() - plan.read_at > TARGET_CACHE_SECONDS
        if plan is None or stale or plan.row.endpoint_name != endpoint:
            # (another endpoint's component: the read says which error, unknown endpoint first)
            plan = await asyncio.to_thread(self._read_plan, endpoint, component)
            self._plans[component] = plan
        row = plan.row
        if not row.status.accepts_invocations():
            if row.status is ComponentStatus.FAILED:
                raise InvalidRequestError(
                    f"Inference component {component} is Failed ({row.failure_reason}); fix the cause and call "
                    "UpdateInferenceComponent, or delete and create it again.",
                    param="InferenceComponentName",
                )
            raise InvalidRequestError(
                f"Inference component {component} is {row.status.value}, not InService; wait for it "
                "(DescribeInferenceComponent shows InferenceComponentStatus).",
                param="InferenceComponentName",
            )
        return Target(endpoint, plan.variant, plan.imported_model, plan.processing, component)

    def _read_plan(self, endpoint: str, component: str) -> _Plan:
        row = self.svc.store.component(component)
        if row is None or row.endpoint_name != endpoint:
            if self.svc.store.endpoint(endpoint) is None:
                raise self.svc.not_found(endpoint)
            raise self._not_a_component_of(endpoint, component)
        model = self.svc.store.model(row.model_name)
        if model is None:
            raise InvalidRequestError(
                f"Inference component {component} names model '{row.model_name}', which was deleted; call "
                "UpdateInferenceComponent with another model.",
                param="InferenceComponentName",
            )
        variant = VariantPlan(
            name=row.variant_name,
            model_name=model.name,
            weight=1.0,
            provisioned_copies=row.copy_count,
            max_concurrency=None,
            instance_type=None,
            serverless=False,
        )
        return _Plan(row, variant, model.imported_model, model_processing(model), time.monotonic())

    def _not_a_component_of(self, endpoint: str, component: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"Inference component {component} is not on endpoint {endpoint}; "
            f"ListInferenceComponents(EndpointNameEquals='{endpoint}') lists the ones it has.",
            param="InferenceComponentName",
        )
