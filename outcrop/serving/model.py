"""A model the serving layer serves: the imported model and its serving spec, fixed while it is served."""

from __future__ import annotations

from dataclasses import dataclass

from outcrop.config import ModelServingSpec
from outcrop.store.imports import ImportedModel


@dataclass(frozen=True, eq=False)
class ServedModel:
    """What the router, the controller and the fleet share about one model: read-only facts."""

    model: ImportedModel
    spec: ModelServingSpec  # serving.defaults with the model's overrides (Controller.spec_for)

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def name(self) -> str:
        return self.model.name
