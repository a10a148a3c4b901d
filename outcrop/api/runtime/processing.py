"""Opt-in pre- and post-processing on the Bedrock runtime, per imported model (issue 17).

The same processing a SageMaker endpoint runs (outcrop/sagemaker/templates.py, handlers.py), for
InvokeModel: a model opts in at import with tags, so nothing changes for models that do not::

    bedrock.create_model_import_job(..., importedModelTags=[
        {"key": "outcrop:input-template", "value": "Question: {{ question }} Context: {{ context }}"},
        {"key": "outcrop:output-template", "value": '{"answer": {{ generated_text | tojson }}}'},
    ])

- ``outcrop:input-template`` renders the caller's body (its keys, and all of it as ``body``) into
  either a JSON object, used as the InvokeModel body (``prompt`` + ``max_gen_len``, or
  ``messages``), or text, used as the ``prompt`` with the caller's own sampling fields
  (``max_gen_len``, ``temperature``, ``top_p``, ...) carried over;
- ``outcrop:output-template`` renders the answer (``generated_text``, ``usage``, the Bedrock
  ``response`` and the request's ``body``) into the response body;
- ``outcrop:handler`` names a Python module in the operator's handler folder whose ``input_fn`` /
  ``output_fn`` run around the templates, in its own worker process (as for endpoints).

Import tags make the processing part of the imported model, fixed with it (a change is a new
import, as a SageMaker model is immutable). Streams get the input processing only: an output
template renders a whole answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from outcrop.api.deps import Services
from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.sagemaker.handlers import check_handler
from outcrop.sagemaker.templates import (
    HANDLER_TAG,
    INPUT_TEMPLATE_ENV,
    INPUT_TEMPLATE_TAG,
    OUTPUT_TEMPLATE_ENV,
    OUTPUT_TEMPLATE_TAG,
    Processing,
    check_template,
)

# The caller's sampling fields kept when the input template renders plain text (the prompt).
SAMPLING_FIELDS = ("max_gen_len", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed")
JSON = "application/json"


@dataclass(frozen=True)
class Processed:
    """A request that went through its model's processing: what the output side needs."""

    processing: Processing
    payload: dict[str, Any]  # the body as the caller sent it


async def prepare(
    request: Request, services: Services, model_id: str, body: dict[str, Any]
) -> tuple[dict[str, Any], Processed | None]:
    """The InvokeModel body after the model's input processing, or ``(body, None)`` without any."""
    try:
        model = await services.serving.resolve(model_id)
    except (
        OutcropError
    ):  # unknown or malformed: the body is checked first, then the model (as without processing)
        return body, None
    processing = Processing.from_tags(model.name, model.tags)
    if not processing.active:
        return body, None
    _check(services, processing)
    payload: Any = body
    if processing.handler is not None:
        content_type = (request.headers.get("content-type") or JSON).split(";")[0].strip().lower()
        payload = await services.extra["sagemaker"].handlers.call(
            processing.handler, "input_fn", payload, content_type
        )
    rendered = processing.apply_input(payload)
    if (
        processing.input_template is not None
        and isinstance(rendered, dict)
        and "inputs" in rendered
        and not {"prompt", "messages"} & rendered.keys()
    ):  # the template rendered text: it is the prompt
        kept = {k: payload[k] for k in SAMPLING_FIELDS if isinstance(payload, dict) and k in payload}
        rendered = {"prompt": rendered["inputs"], **kept}
    if not isinstance(rendered, dict):
        raise InvalidRequestError(
            f"The input processing of model '{model.name}' ({INPUT_TEMPLATE_TAG} or its handler's input_fn) "
            f"must give a JSON object (an InvokeModel body) or text (the prompt), not {type(rendered).__name__}.",
            param="body",
        )
    return rendered, Processed(processing, body)


async def finish(
    request: Request, services: Services, processed: Processed, answer: dict[str, Any], usage: dict[str, Any]
) -> tuple[bytes, str] | None:
    """The response body and its media type after the model's output processing (None: answer as is)."""
    processing = processed.processing
    rendered = processing.apply_output(processed.payload, answer, usage)
    if processing.handler is not None:
        accept = (request.headers.get("accept") or JSON).split(";")[0].strip().lower() or JSON
        out = await services.extra["sagemaker"].handlers.call(processing.handler, "output_fn", answer, accept)
        rendered = out.encode() if isinstance(out, str) else json.dumps(out, ensure_ascii=False).encode()
    if rendered is None:
        return None
    try:
        json.loads(rendered)
    except ValueError:
        return rendered, "text/plain"
    return rendered, JSON


def _check(services: Services, processing: Processing) -> None:
    """The model's processing tags are usable here, or a 400 naming the tag (templates compile once, cached)."""
    checks: list[tuple[str, Callable[[], object]]] = [
        (INPUT_TEMPLATE_TAG, lambda: check_template(INPUT_TEMPLATE_ENV, processing.input_template or "")),
        (OUTPUT_TEMPLATE_TAG, lambda: check_template(OUTPUT_TEMPLATE_ENV, processing.output_template or "")),
    ]
    if processing.handler is not None:
        handler = processing.handler
        checks.append((HANDLER_TAG, lambda: check_handler(services.config.sagemaker, handler)))
    for tag, check in checks:
        try:
            check()
        except InvalidRequestError as exc:
            raise InvalidRequestError(
                f"Model '{processing.model_name}' opted into processing with its import tag {tag}, which cannot "
                f"be used: {exc.message} Import the model again with a corrected tag.",
                param=tag,
            ) from None
