"""A prompt's content as botocore's ``bedrock-agent`` service model shapes it, checked, and filled in.

The shapes (``PromptVariant``, ``PromptTemplateConfiguration``, ...) follow
``botocore/data/bedrock-agent/2023-06-05/service-2.json.gz`` member for member, with its bounds;
unknown members are ignored, as AWS services do, so newer SDKs keep working. On top of the
shapes, :func:`check_content` enforces what a prompt must mean to be served here:

- a union (``templateConfiguration``, content blocks) sets exactly one member, and the template
  member matches ``templateType``;
- every ``{{name}}`` placeholder in the template is declared in ``inputVariables`` (a typo would
  otherwise reach the model as literal braces), and declared names are unique;
- ``modelId`` names an imported model (its name or its ``imported-model`` ARN): Outcrop serves
  nothing else; agents (``genAiResource``) are not served.

Filling in (:func:`render`) is one pass over the template: a value that itself contains
``{{...}}`` is inserted as text and never expanded again, so user input cannot reach other
variables.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from outcrop.errors import InvalidRequestError

# Patterns of the service model. ([0-9a-zA-Z][_-]?){1,100} cannot backtrack badly: a separator can
# only be taken by the group just before it.
PROMPT_NAME_RE = re.compile(r"([0-9a-zA-Z][_-]?){1,100}")
VARIABLE_NAME_RE = PROMPT_NAME_RE
# A placeholder in a template: {{name}}, the name as PromptInputVariableName allows it.
PLACEHOLDER_RE = re.compile(r"\{\{([0-9a-zA-Z][0-9a-zA-Z_-]*)\}\}")
IMPORTED_MODEL_ARN_RE = re.compile(
    r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:imported-model/[a-z0-9]{12}"
)
MODEL_NAME_RE = re.compile(r"([0-9a-zA-Z][_-]?)+")

_Name = Annotated[StrictStr, Field(pattern=r"^([0-9a-zA-Z][_-]?){1,100}$")]
_Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CachePointBlock(_Shape):
    type: Literal["default"]


class PromptInputVariable(_Shape):
    name: _Name | None = None


class TextPromptTemplateConfiguration(_Shape):
    text: Annotated[StrictStr, Field(min_length=1)]
    cachePoint: CachePointBlock | None = None
    inputVariables: list[PromptInputVariable] | None = Field(None, max_length=20)


class ContentBlock(_Shape):
    """A union: ``text`` or ``cachePoint``."""

    text: StrictStr | None = None
    cachePoint: CachePointBlock | None = None


class SystemContentBlock(_Shape):
    """A union: ``text`` (non-empty) or ``cachePoint``."""

    text: Annotated[StrictStr, Field(min_length=1)] | None = None
    cachePoint: CachePointBlock | None = None


class Message(_Shape):
    role: Literal["user", "assistant"]
    content: list[ContentBlock]


class ToolConfiguration(_Shape):
    """Kept as sent and handed to Converse's ``toolConfig`` at run time (tool use is Converse's business)."""

    model_config = ConfigDict(extra="allow")

    tools: list[dict[str, Any]] = Field(min_length=1)
    toolChoice: dict[str, Any] | None = None


class ChatPromptTemplateConfiguration(_Shape):
    messages: list[Message]
    system: list[SystemContentBlock] | None = None
    inputVariables: list[PromptInputVariable] | None = Field(None, max_length=20)
    toolConfiguration: ToolConfiguration | None = None


class PromptTemplateConfiguration(_Shape):
    """A union: ``text`` (templateType TEXT) or ``chat`` (templateType CHAT)."""

    text: TextPromptTemplateConfiguration | None = None
    chat: ChatPromptTemplateConfiguration | None = None


class PromptModelInferenceConfiguration(_Shape):
    temperature: _Unit | None = None
    topP: _Unit | None = None
    maxTokens: Annotated[int, Field(ge=0, strict=True)] | None = None
    stopSequences: list[StrictStr] | None = Field(None, max_length=4)


class PromptInferenceConfiguration(_Shape):
    """A union whose only member is ``text``."""

    text: PromptModelInferenceConfiguration | None = None


class PromptMetadataEntry(_Shape):
    key: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9\s._:/=+@-]*$")]
    value: Annotated[StrictStr, Field(max_length=1024, pattern=r"^[a-zA-Z0-9\s._:/=+@-]*$")]


class PromptVariant(_Shape):
    name: _Name
    templateType: Literal["TEXT", "CHAT"]
    templateConfiguration: PromptTemplateConfiguration
    modelId: Annotated[StrictStr, Field(min_length=1, max_length=2048)] | None = None
    inferenceConfiguration: PromptInferenceConfiguration | None = None
    metadata: list[PromptMetadataEntry] | None = Field(None, max_length=50)
    additionalModelRequestFields: dict[str, Any] | None = None
    genAiResource: dict[str, Any] | None = None

    def variables(self) -> list[str]:
        """The declared input variables' names, in order."""
        config = self.templateConfiguration.text or self.templateConfiguration.chat
        assert config is not None  # check_content ran
        return [v.name for v in config.inputVariables or [] if v.name]


class PromptContent(_Shape):
    """What a DRAFT or a version holds: the members CreatePrompt / UpdatePrompt take and GetPrompt answers."""

    name: _Name
    description: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    customerEncryptionKeyArn: (
        Annotated[
            StrictStr,
            Field(pattern=r"^arn:aws(|-cn|-us-gov):kms:[a-zA-Z0-9-]*:[0-9]{12}:key/[a-zA-Z0-9-]{36}$"),
        ]
        | None
    ) = None
    defaultVariant: _Name | None = None
    # The service model allows at most one variant per prompt.
    variants: list[PromptVariant] | None = Field(None, max_length=1)

    def variant(self) -> PromptVariant | None:
        """The variant a run uses: ``defaultVariant``'s, else the only one."""
        variants = self.variants or []
        for v in variants:
            if v.name == self.defaultVariant:
                return v
        return variants[0] if variants else None

    def wire(self) -> dict[str, Any]:
        """As the service model's output shapes carry it (no nulls)."""
        return self.model_dump(mode="json", exclude_none=True)


# -- meaning -------------------------------------------------------------------------


def _invalid(where: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"1 validation error detected: '{where}' {problem}", param=where)


def placeholders(variant: PromptVariant) -> list[str]:
    """Every ``{{name}}`` the variant's template uses, in order of first use."""
    texts: list[str] = []
    config = variant.templateConfiguration
    if config.text is not None:
        texts.append(config.text.text)
    if config.chat is not None:
        texts.extend(b.text for m in config.chat.messages for b in m.content if b.text)
        texts.extend(b.text for b in config.chat.system or [] if b.text)
    found: dict[str, None] = {}
    for text in texts:
        for match in PLACEHOLDER_RE.finditer(text):
            found.setdefault(match.group(1), None)
    return list(found)


def _check_union(value: BaseModel, where: str, members: tuple[str, ...]) -> None:
    present = [m for m in members if getattr(value, m) is not None]
    if len(present) != 1:
        raise _invalid(
            where,
            f"must set exactly one of {', '.join(members)} (it sets {', '.join(present) or 'none'}).",
        )


def check_model_id(model_id: str, where: str) -> None:
    if IMPORTED_MODEL_ARN_RE.fullmatch(model_id):
        return
    if MODEL_NAME_RE.fullmatch(model_id) and len(model_id) <= 63:
        return
    raise _invalid(
        where,
        f"is {model_id!r}; Outcrop runs prompts on imported models only: give the model's name "
        "(e.g. 'my-llama') or its ARN (arn:aws:bedrock:<region>:<account>:imported-model/<id>), as "
        "ListImportedModels shows them.",
    )


def check_content(content: PromptContent) -> PromptContent:
    """``content`` if it can be served, else a ValidationException naming the member and the fix."""
    variants = content.variants or []
    for i, variant in enumerate(variants):
        at = f"variants.{i}"
        config = variant.templateConfiguration
        _check_union(config, f"{at}.templateConfiguration", ("text", "chat"))
        wanted = "text" if variant.templateType == "TEXT" else "chat"
        if getattr(config, wanted) is None:
            raise _invalid(
                f"{at}.templateConfiguration",
                f"must set '{wanted}' for templateType {variant.templateType} "
                f"(it sets '{'chat' if wanted == 'text' else 'text'}').",
            )
        if config.chat is not None:
            for j, message in enumerate(config.chat.messages):
                for k, block in enumerate(message.content):
                    _check_union(
                        block,
                        f"{at}.templateConfiguration.chat.messages.{j}.content.{k}",
                        ("text", "cachePoint"),
                    )
            for k, sblock in enumerate(config.chat.system or []):
                _check_union(sblock, f"{at}.templateConfiguration.chat.system.{k}", ("text", "cachePoint"))
        if variant.inferenceConfiguration is not None:
            _check_union(variant.inferenceConfiguration, f"{at}.inferenceConfiguration", ("text",))
        if variant.genAiResource is not None:
            raise _invalid(
                f"{at}.genAiResource",
                "is not supported: Outcrop serves no agents. Remove it and name an imported model in modelId.",
            )
        if variant.modelId is not None:
            check_model_id(variant.modelId, f"{at}.modelId")
        declared = [v.name for v in ((config.text or config.chat).inputVariables or [])]  # type: ignore[union-attr]
        if any(name is None for name in declared):
            raise _invalid(
                f"{at}.templateConfiguration.{wanted}.inputVariables",
                'has an entry without a name; each is {"name": "..."}.',
            )
        duplicates = sorted({n for n in declared if declared.count(n) > 1 and n})
        if duplicates:
            raise _invalid(
                f"{at}.templateConfiguration.{wanted}.inputVariables",
                f"declares {', '.join(duplicates)} more than once; declare each variable once.",
            )
        undeclared = [p for p in placeholders(variant) if p not in declared]
        if undeclared:
            raise _invalid(
                f"{at}.templateConfiguration.{wanted}.inputVariables",
                f"does not declare {', '.join(undeclared)}, which the template uses as "
                f"{', '.join('{{' + p + '}}' for p in undeclared)}. Add "
                f"{', '.join(repr({'name': p}) for p in undeclared)} to inputVariables.",
            )
    names = [v.name for v in variants]
    if content.defaultVariant is not None and variants and content.defaultVariant not in names:
        raise _invalid(
            "defaultVariant",
            f"is {content.defaultVariant!r}, which is not a variant of this prompt ({', '.join(names)}).",
        )
    return content


# -- filling in ------------------------------------------------------------------------


def parse_variables(raw: Any) -> dict[str, str]:
    """Converse's ``promptVariables`` (``{"name": {"text": "value"}}``) as ``{name: value}``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequestError(
            'promptVariables must be an object like {"topic": {"text": "volcanoes"}}.',
            param="promptVariables",
        )
    values: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, dict) or set(value) != {"text"} or not isinstance(value["text"], str):
            raise InvalidRequestError(
                f'promptVariables.{name} must be {{"text": "..."}} (a string value), not {str(value)[:80]}.',
                param=f"promptVariables.{name}",
            )
        values[str(name)] = value["text"]
    return values


def check_variables(variant: PromptVariant, values: dict[str, str], prompt: str) -> None:
    """A ValidationException naming every declared variable that is missing and every unknown one."""
    declared = variant.variables()
    missing = [n for n in declared if n not in values]
    extra = sorted(n for n in values if n not in declared)
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if extra:
        parts.append(f"not declared by the prompt: {', '.join(extra)}")
    accepted = ", ".join(declared) or "none"
    raise InvalidRequestError(
        f"promptVariables do not match prompt {prompt}: {'; '.join(parts)}. The prompt's variables are: "
        f'{accepted}; send each as "promptVariables": {{"<name>": {{"text": "..."}}}}.',
        param="promptVariables",
    )


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``{{name}}`` replaced by its value, in one pass (values are never expanded)."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


class Rendered(BaseModel):
    """A variant with its variables filled in, ready to become a Converse or InvokeModel body."""

    template_type: Literal["TEXT", "CHAT"]
    text: str | None = None  # TEXT
    system: list[str] = Field(default_factory=list)  # CHAT
    messages: list[dict[str, Any]] = Field(default_factory=list)  # CHAT: Converse messages (text blocks)
    tool_config: dict[str, Any] | None = None
    inference: PromptModelInferenceConfiguration = Field(default_factory=PromptModelInferenceConfiguration)
    additional_fields: dict[str, Any] | None = None


def render(variant: PromptVariant, values: dict[str, str]) -> Rendered:
    """The variant filled in with ``values`` (already checked with :func:`check_variables`).

    ``cachePoint`` blocks are dropped: a copy's prefix cache reuses a prompt's shared start anyway.
    """
    config = variant.templateConfiguration
    inference = (variant.inferenceConfiguration.text if variant.inferenceConfiguration else None) or (
        PromptModelInferenceConfiguration()
    )
    common: dict[str, Any] = {
        "inference": inference,
        "additional_fields": variant.additionalModelRequestFields,
    }
    if config.text is not None:
        return Rendered(template_type="TEXT", text=fill(config.text.text, values), **common)
    assert config.chat is not None  # check_content ran
    messages = []
    for message in config.chat.messages:
        blocks = [{"text": fill(b.text, values)} for b in message.content if b.text is not None]
        messages.append({"role": message.role, "content": blocks})
    tool_config = None
    if config.chat.toolConfiguration is not None:
        tool_config = config.chat.toolConfiguration.model_dump(mode="json", exclude_none=True)
    return Rendered(
        template_type="CHAT",
        system=[fill(b.text, values) for b in config.chat.system or [] if b.text],
        messages=messages,
        tool_config=tool_config,
        **common,
    )
