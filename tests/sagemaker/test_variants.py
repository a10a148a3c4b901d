"""Production variants as decisions: what each asks of serving, and which one a call takes."""

from __future__ import annotations

import pytest

from outcrop.errors import InvalidRequestError, ThrottlingError
from outcrop.sagemaker.variants import ConcurrencyGate, check_variants, pick_variant, plan_variant


def variant(name: str = "A", **overrides: object) -> dict[str, object]:
    return {"VariantName": name, "ModelName": "m", "InitialInstanceCount": 1, **overrides}


@pytest.mark.parametrize(
    ("spec", "copies", "max_concurrency", "weight"),
    [
        (variant(), 1, None, 1.0),
        (variant(InitialInstanceCount=3, InitialVariantWeight=0.25), 3, None, 0.25),
        (variant(ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 5}), 0, 5, 1.0),
        (
            variant(
                ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 5, "ProvisionedConcurrency": 2}
            ),
            1,
            5,
            1.0,
        ),
    ],
)
def test_a_variant_plans_its_copies_concurrency_and_weight(
    spec: dict[str, object], copies: int, max_concurrency: int | None, weight: float
) -> None:
    plan = plan_variant(spec)
    assert (plan.provisioned_copies, plan.max_concurrency, plan.weight) == (copies, max_concurrency, weight)


@pytest.mark.parametrize(("draw", "expected"), [(0.0, "A"), (0.24, "A"), (0.25, "B"), (0.99, "B")])
def test_weights_split_draws_in_proportion(draw: float, expected: str) -> None:
    plans = [
        plan_variant(variant("A", InitialVariantWeight=1)),
        plan_variant(variant("B", InitialVariantWeight=3)),
    ]
    assert pick_variant("e", plans, None, draw).name == expected


def test_a_zero_weight_variant_gets_traffic_only_when_targeted() -> None:
    plans = [plan_variant(variant("A")), plan_variant(variant("B", InitialVariantWeight=0))]
    assert {pick_variant("e", plans, None, d / 10).name for d in range(10)} == {"A"}
    assert pick_variant("e", plans, "B", 0.5).name == "B"


def test_an_unknown_target_variant_lists_the_variants() -> None:
    with pytest.raises(InvalidRequestError, match="its variants: A, B"):
        pick_variant("e", [plan_variant(variant("A")), plan_variant(variant("B"))], "C", 0.0)


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([variant("A"), variant("A")], "names variant 'A' twice"),
        (
            [variant(ModelName=None, ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 1})],
            "has no ModelName",
        ),
        (
            [variant("A"), variant("B", ModelName=None)],
            "mixes variants with a ModelName and variants without",
        ),
        ([variant(InitialInstanceCount=None)], "needs InitialInstanceCount"),
        ([variant(InitialVariantWeight=0)], "InitialVariantWeight 0"),
    ],
)
def test_bad_configs_are_refused_with_the_fix(variants: list[dict[str, object]], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_variants("cfg", variants)


def test_a_variant_without_a_model_hosts_inference_components() -> None:
    check_variants("cfg", [variant(ModelName=None)])
    assert plan_variant(variant(ModelName=None)).hosts_components
    assert not plan_variant(variant()).hosts_components


@pytest.mark.anyio
async def test_a_serverless_variant_admits_max_concurrency_calls_then_throttles() -> None:
    gate = ConcurrencyGate()
    plan = plan_variant(variant(ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 2}))
    async with gate.hold("e", plan), gate.hold("e", plan):
        with pytest.raises(ThrottlingError, match="MaxConcurrency of 2"):
            async with gate.hold("e", plan):
                pass
        assert gate.in_flight("e", "A") == 2
    assert gate.in_flight("e", "A") == 0
    async with gate.hold("e", plan_variant(variant())):  # instance variants have no cap
        pass
