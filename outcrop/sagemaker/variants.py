"""Production variants as decisions (pure): what a variant asks of serving, and which one a call takes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from outcrop.errors import InvalidRequestError, ThrottlingError
from outcrop.sagemaker.templates import Processing

# SageMaker's default InitialVariantWeight: every variant equal.
DEFAULT_WEIGHT = 1.0


@dataclass(frozen=True)
class VariantPlan:
    """One production variant, in serving's terms."""

    name: str
    model_name: str  # the SageMaker model (its container names the imported model)
    weight: float
    provisioned_copies: int  # copies started when the endpoint deploys (0 = scale to zero)
    max_concurrency: int | None  # in-flight invocations the variant admits (ServerlessConfig), None = no cap
    instance_type: str | None  # recorded and echoed; Outcrop places copies by memory, not instance type
    serverless: bool

    @property
    def hosts_components(self) -> bool:
        """A variant that names no model hosts inference components (each names its own model)."""
        return not self.model_name


@dataclass(frozen=True)
class Target:
    """Where one invocation goes: the endpoint's chosen variant, its imported model and processing."""

    endpoint: str
    variant: VariantPlan
    imported_model: str
    processing: Processing
    component: str = ""  # the inference component the call names ("" for a model variant)


def plan_variant(spec: dict[str, object]) -> VariantPlan:
    """A ProductionVariant (as validated) -> its plan.

    Instance variants keep ``InitialInstanceCount`` copies warm (SageMaker's instances are always on);
    serverless variants scale to zero, with one warm copy when ``ProvisionedConcurrency`` is set,
    and admit at most ``MaxConcurrency`` invocations at once (more are throttled, as SageMaker does).
    """
    serverless = spec.get("ServerlessConfig")
    weight = spec.get("InitialVariantWeight")
    if isinstance(serverless, dict):
        provisioned = 1 if serverless.get("ProvisionedConcurrency") else 0
        max_concurrency = int(serverless["MaxConcurrency"])
    else:
        provisioned = int(spec.get("InitialInstanceCount") or 0)  # type: ignore[call-overload]
        max_concurrency = None
    return VariantPlan(
        name=str(spec["VariantName"]),
        model_name=str(spec.get("ModelName") or ""),
        weight=DEFAULT_WEIGHT if weight is None else float(weight),  # type: ignore[arg-type]
        provisioned_copies=provisioned,
        max_concurrency=max_concurrency,
        instance_type=str(spec["InstanceType"]) if spec.get("InstanceType") else None,
        serverless=isinstance(serverless, dict),
    )


def check_variants(endpoint_config: str, variants: Sequence[dict[str, object]]) -> None:
    """SageMaker's own checks of a config's variants, with messages that say how to fix them."""
    seen: set[str] = set()
    for i, v in enumerate(variants):
        where = f"ProductionVariants[{i}]"
        name = str(v["VariantName"])
        if name in seen:
            raise InvalidRequestError(
                f"Endpoint config '{endpoint_config}' names variant '{name}' twice; variant names must be unique.",
                param=f"{where}.VariantName",
            )
        seen.add(name)
        if not v.get("ModelName") and v.get("ServerlessConfig") is not None:
            raise InvalidRequestError(
                f"{where} ('{name}') has no ModelName; name a model made with CreateModel (a serverless "
                "variant cannot host inference components).",
                param=f"{where}.ModelName",
            )
        if v.get("ServerlessConfig") is None and not v.get("InitialInstanceCount"):
            raise InvalidRequestError(
                f"{where} ('{name}') needs InitialInstanceCount (with InstanceType) or a ServerlessConfig.",
                param=f"{where}.InitialInstanceCount",
            )
    hosts = [bool(v.get("ModelName")) for v in variants]
    if any(hosts) and not all(hosts):
        raise InvalidRequestError(
            f"Endpoint config '{endpoint_config}' mixes variants with a ModelName and variants without one; "
            "either every variant names a model, or none does (the endpoint then hosts inference components, "
            "added with CreateInferenceComponent).",
            param="ProductionVariants",
        )
    if sum(plan_variant(dict(v)).weight for v in variants) <= 0:
        raise InvalidRequestError(
            f"Every variant of endpoint config '{endpoint_config}' has InitialVariantWeight 0; "
            "give at least one a positive weight so traffic has somewhere to go.",
            param="ProductionVariants",
        )


def pick_variant(
    endpoint: str, variants: Sequence[VariantPlan], target: str | None, draw: float
) -> VariantPlan:
    """The variant a call goes to: ``TargetVariant`` if given, else by weight (``draw`` in [0, 1))."""
    if target:
        for v in variants:
            if v.name == target:
                return v
        names = ", ".join(v.name for v in variants)
        raise InvalidRequestError(
            f"TargetVariant '{target}' is not a variant of endpoint '{endpoint}'; its variants: {names}.",
            param="TargetVariant",
        )
    total = sum(v.weight for v in variants)
    point = draw * total
    for v in variants:
        if point < v.weight:
            return v
        point -= v.weight
    return next(v for v in reversed(variants) if v.weight > 0)


class ConcurrencyGate:
    """In-flight invocations per (endpoint, variant), capped at the variant's ``max_concurrency``.

    Per gateway: several gateways on one fleet each admit up to the cap (documented in docs/sagemaker.md).
    """

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, str], int] = {}

    def in_flight(self, endpoint: str, variant: str) -> int:
        return self._in_flight.get((endpoint, variant), 0)

    @asynccontextmanager
    async def hold(self, endpoint: str, variant: VariantPlan) -> AsyncIterator[None]:
        key = (endpoint, variant.name)
        limit = variant.max_concurrency
        if limit is not None and self._in_flight.get(key, 0) >= limit:
            raise ThrottlingError(
                f"Endpoint {endpoint} variant {variant.name} is at its MaxConcurrency of {limit} invocations; "
                "retry with backoff (boto3 does), or raise ServerlessConfig.MaxConcurrency.",
                retry_after_seconds=1.0,
            )
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            self._in_flight[key] -= 1
