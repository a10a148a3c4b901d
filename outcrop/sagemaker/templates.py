"""Declarative pre- and post-processing of an endpoint: sandboxed Jinja2 templates.

What a SageMaker team's proxy ``model.py`` did (format the prompt, shape the answer), as two
templates carried in the model's container ``Environment``:

- ``OUTCROP_INPUT_TEMPLATE`` renders the request payload (its top-level keys, and all of it as
  ``body``) into either a JSON object (used as the request body: a TGI ``{"inputs", "parameters"}``
  or a Messages API body) or plain text (used as ``inputs``, with the payload's ``parameters``).
- ``OUTCROP_OUTPUT_TEMPLATE`` renders the answer (``generated_text``, ``details``, ``usage``, the
  default ``response`` and the request's ``body``) into the response body, sent as it renders.

Why the container Environment: it is where SageMaker callers already configure their serving
container (``HF_MODEL_ID``, ``SM_NUM_GPUS``...), so the boto3 ``create_model`` code stays as it is;
and models are immutable, so a template change is a new model + endpoint config + UpdateEndpoint,
which versions the processing with the config and rolls it back with it.

The templates run in Jinja2's ImmutableSandboxedEnvironment (no attribute access to internals, no
mutation of the payload) with StrictUndefined, so a field the template needs and the payload lacks
is a ValidationError naming it, never a silently empty prompt.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from outcrop.errors import InvalidRequestError, ModelFailedError

HANDLER_ENV = "OUTCROP_HANDLER"  # (outcrop.sagemaker.handlers imports it from here)
INPUT_TEMPLATE_ENV = "OUTCROP_INPUT_TEMPLATE"
OUTPUT_TEMPLATE_ENV = "OUTCROP_OUTPUT_TEMPLATE"
# The same processing on the Bedrock runtime, opted into per imported model by its import tags.
INPUT_TEMPLATE_TAG = "outcrop:input-template"
OUTPUT_TEMPLATE_TAG = "outcrop:output-template"
HANDLER_TAG = "outcrop:handler"
# A template is configuration, not data: 64 KiB is far more than a prompt format needs.
MAX_TEMPLATE_CHARS = 65_536

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_ENV.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def check_template(variable: str, source: str) -> None:
    """Raise InvalidRequestError naming the variable and the syntax error (CreateModel time)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise InvalidRequestError(
            f"{variable} has {len(source):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}.",
            param=f"Environment.{variable}",
        )
    try:
        _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidRequestError(
            f"{variable} is not a valid Jinja2 template: {exc.message} (line {exc.lineno}). Fix it and "
            "create the model again.",
            param=f"Environment.{variable}",
        ) from None


def _missing_field(exc: jinja2.UndefinedError) -> str:
    # StrictUndefined says "'question' is undefined" or "'dict object' has no attribute 'x'".
    return exc.message or "a field"


@dataclass(frozen=True)
class Processing:
    """The templates (and handler module) of one model; any may be absent (values pass through)."""

    model_name: str
    input_template: str | None = None
    output_template: str | None = None
    handler: str | None = None  # a Python handler module (outcrop.sagemaker.handlers), run around these

    @property
    def active(self) -> bool:
        return self.input_template is not None or self.output_template is not None or self.handler is not None

    @classmethod
    def from_tags(cls, model_name: str, tags: list[dict[str, str]]) -> Processing:
        """An imported model's opt-in processing on the Bedrock runtime: its import tags
        ``outcrop:input-template``, ``outcrop:output-template`` and ``outcrop:handler`` (the
        container Environment's three variables, under tag names)."""
        named = {t.get("key"): t.get("value") for t in tags}
        return cls(
            model_name,
            named.get(INPUT_TEMPLATE_TAG),
            named.get(OUTPUT_TEMPLATE_TAG),
            named.get(HANDLER_TAG),
        )

    @classmethod
    def from_environment(cls, model_name: str, environment: dict[str, str]) -> Processing:
        return cls(
            model_name,
            environment.get(INPUT_TEMPLATE_ENV),
            environment.get(OUTPUT_TEMPLATE_ENV),
            environment.get(HANDLER_ENV),
        )

    def _render(self, variable: str, source: str, context: dict[str, Any]) -> str:
        try:
            return _compile(source).render(context)
        except jinja2.UndefinedError as exc:
            raise InvalidRequestError(
                f"The endpoint's {variable} (model '{self.model_name}') needs {_missing_field(exc)}, which "
                "the request does not have. Send that field in the body, or change the template.",
                param=variable,
            ) from None
        except SecurityError as exc:
            raise InvalidRequestError(
                f"The endpoint's {variable} (model '{self.model_name}') tried something the sandbox forbids: "
                f"{exc}. Templates may only read the payload.",
                param=variable,
            ) from None
        except Exception as exc:  # a template bug (1/0, a bad filter argument): the model's fault
            raise ModelFailedError(
                f"The endpoint's {variable} (model '{self.model_name}') failed: {type(exc).__name__}: {exc}.",
                original_status_code=500,
                model_id=self.model_name,
            ) from None

    def apply_input(self, payload: Any) -> Any:
        """The payload after the input template (unchanged without one)."""
        if self.input_template is None:
            return payload
        context = {**payload, "body": payload} if isinstance(payload, dict) else {"body": payload}
        rendered = self._render(INPUT_TEMPLATE_ENV, self.input_template, context)
        try:
            as_json = json.loads(rendered)
        except ValueError:
            as_json = None
        if isinstance(as_json, dict):
            return as_json
        parameters = payload.get("parameters") if isinstance(payload, dict) else None
        return {"inputs": rendered, "parameters": parameters if isinstance(parameters, dict) else {}}

    def apply_output(self, request: Any, response: Any, usage: dict[str, Any]) -> bytes | None:
        """The response body after the output template, or None without one."""
        if self.output_template is None:
            return None
        first = response[0] if isinstance(response, list) and response else response
        generated = first.get("generated_text") if isinstance(first, dict) else None
        if generated is None and isinstance(first, dict):
            generated = first.get(
                "generation"
            )  # a Bedrock InvokeModel answer (outcrop.api.runtime.processing)
        if generated is None and isinstance(first, dict) and first.get("choices"):
            generated = (first["choices"][0].get("message") or {}).get("content")
        context = {
            "generated_text": generated,
            "details": first.get("details") if isinstance(first, dict) else None,
            "usage": usage,
            "response": response,
            "body": request,
        }
        return self._render(OUTPUT_TEMPLATE_ENV, self.output_template, context).encode()
