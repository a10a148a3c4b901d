"""The model families (``config.json`` ``model_type``) the engine serves.

The one list: the engine's model runner refuses anything else, and the registry's import
validation (``outcrop/registry/validation.py``) checks a folder against it before import.
"""

from __future__ import annotations

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "mistral", "mixtral", "qwen2", "qwen3")
