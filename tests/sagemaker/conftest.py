"""The serving tests' fixtures (a registry of tiny models, null-copy configs) for SageMaker's in-process tests."""

from tests.serving.conftest import serving_config, serving_registry

__all__ = ["serving_config", "serving_registry"]
