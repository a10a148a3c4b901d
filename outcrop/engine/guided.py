"""Constrained (guided) decoding: JSON schema, JSON object, regex, choice and Lark grammars.

Two halves, one per process of a copy:

* **API side** (``GrammarCompiler``): turns a request's constraint (``response_format``,
  vLLM's ``guided_*`` / ``structured_outputs``, a forced tool call) into an llguidance
  grammar, compiles it once against the model's tokenizer to refuse what cannot work with a
  400 naming the offending part, and caches the result per constraint. Runs off the event
  loop (the caller uses ``asyncio.to_thread``).
* **engine core** (``GuidedDecoding``): one ``LLMatcher`` per constrained sequence, copied
  from a per-grammar template (compiled once per grammar, cached); before each forward the
  token masks of the constrained rows that will sample are computed on a helper thread while
  the model runs (llguidance releases the GIL), and the sampler applies them to those rows
  only. The matcher advances with each accepted token; when the grammar is complete the
  sequence stops.

**Closing.** A weak (or random-weight) model may never close a string: constrained or not, it
would run into ``max_tokens`` and answer JSON that does not parse. So a constrained sequence
whose remaining budget is down to its reserve steers to the shortest way to finish. The
reserve is the larger of ``closing_reserve(max_tokens)`` and the length of the grammar's
shortest complete output plus a margin (measured once per grammar by running the closing
policy from the start, ``shortest_output``). Closing: among the tokens the grammar allows it prefers end-of-sequence, then ``"``,
``}``, ``]``, ``,`` and ``0`` (close the string, the object, the array; end a number and go
to the next required property; the shortest number), and otherwise keeps the model's choice. Objects that leave
``additionalProperties`` unspecified are generated without extra properties (xgrammar's
"strict mode", vLLM's default), which keeps both the model and the closing from inventing keys;
the output still validates against the schema as given.

Why llguidance (over xgrammar): both install from PyPI and worked on our locally trained
fast tokenizers on CPU; llguidance is a self-contained wheel (xgrammar pulls triton and a
TVM FFI runtime), excludes special tokens from JSON strings (xgrammar let ``<pad>`` into a
string with our tiny tokenizer), builds a matcher in ~1 ms without an ahead-of-time compile
step, and reports schema errors as plain sentences ("Invalid type: strnig") rather than C++
source locations. It is what vLLM's ``guidance`` backend and llama.cpp's use too.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from outcrop.errors import InvalidRequestError

log = logging.getLogger(__name__)

# Why 64 KiB: far above any real tool or response schema (OpenAI's own limit on a strict
# schema is 100 properties / 5 levels), and small enough that compiling one cannot stall a copy.
MAX_CONSTRAINT_BYTES = 64 * 1024
# Why 512: distinct schemas a copy sees are few (one per tool set / response model); a bounded
# cache keeps a client that sends a new schema per request from growing memory without end.
GRAMMAR_CACHE_SIZE = 512
# Why 1024: guided_choice lists beyond this are better written as an enum in a JSON schema.
MAX_CHOICES = 1024
# JSON as models are trained to write it (and as OpenAI's structured outputs look): no free
# whitespace, so a weak model cannot pad its answer with newlines until it runs out of tokens.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

KINDS = ("json", "json_object", "regex", "choice", "grammar")
# Tried in order when a constrained sequence is closing (see the module docstring).
CLOSING_TEXTS = ('"', "}", "]", ",", "0")
# Why 8..64 and a quarter: enough to close a few nested strings/objects and the required
# properties still missing, while a long answer keeps most of its budget for the model.
MIN_CLOSING_RESERVE = 8
MAX_CLOSING_RESERVE = 64


# Why 8: closing from the middle of an output may first have to finish an optional part the
# model chose (a nested object, an array) that the shortest complete output does not contain.
CLOSING_MARGIN = 8
# Why 512: longer shortest outputs are schemas no budget-closing can save; give up measuring.
MAX_SHORTEST_OUTPUT = 512


def closing_reserve(max_tokens: int) -> int:
    """Tokens before the budget runs out at which a constrained sequence starts closing."""
    return min(MAX_CLOSING_RESERVE, max(MIN_CLOSING_RESERVE, max_tokens // 4))


def strict_objects(schema: Any) -> Any:
    """A copy of ``schema`` in which objects with ``properties`` but no ``additionalProperties`` get
    ``additionalProperties: false`` (what is generated still validates against ``schema``)."""
    if isinstance(schema, list):
        return [strict_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_objects(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    if isinstance(schema.get("properties"), dict):  # property names are data, not schemas: keep them as is
        out["properties"] = {k: strict_objects(v) for k, v in schema["properties"].items()}
    return out


@dataclass(frozen=True)
class Constraint:
    """What a request constrains its output to, before compiling.

    ``kind``: ``json`` (``value`` a JSON schema, as JSON text), ``json_object`` (any JSON
    object), ``regex``, ``choice`` (``value`` a JSON array of strings) or ``grammar`` (Lark).
    ``param``: the request field it came from, named in errors.
    """

    kind: str
    value: str
    param: str = "response_format"


@dataclass(frozen=True)
class CompiledGrammar:
    grammar: str  # llguidance's grammar text, what travels to the core in ``SamplingParams.grammar``
    compile_seconds: float  # of the first compile (0 when it came from the cache)
    cached: bool


def json_pointer(path: list[str | int]) -> str:
    return "#" + "".join(f"/{p}" for p in path) if path else "# (the schema's root)"


def _walk(node: Any, path: list[str | int]) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, [*path, key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, [*path, i])


def locate_in_schema(schema: Any, message: str) -> str | None:
    """The JSON pointer of the schema part an llguidance error is about (its message names a
    key or a value but not where it is), or None if nothing in the schema matches."""
    unimplemented = re.search(r"Unimplemented keys: \[(.*?)\]", message)
    keys = {k.strip().strip('"') for k in unimplemented.group(1).split(",")} if unimplemented else set()
    best: list[str | int] | None = None
    for path, key, value in _walk(schema, []):
        hit = key in keys or (isinstance(value, str) and len(value) > 0 and value in message)
        if hit and (best is None or len(path) + 1 > len(best)):
            best = [*path, key]
    return json_pointer(best) if best is not None else None


def _schema_structure_error(schema: Any) -> str | None:
    """A meta-schema violation (with its place), from jsonschema-rs (the gateway checks the same way:
    outcrop/protocol/tools.py)."""
    import jsonschema_rs

    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        return f"at {json_pointer(list(exc.instance_path))}: {exc.message}"
    except jsonschema_rs.ReferencingError as exc:
        return f"at #/$schema: {exc}"
    return None


def grammar_text(constraint: Constraint) -> tuple[str, Any]:
    """llguidance's grammar for a constraint, and the parsed schema (for error locations)."""
    kind, value = constraint.kind, constraint.value
    if kind == "json_object":
        return _json_grammar({"type": "object"}), None
    if kind == "json":
        try:
            schema = json.loads(value)
        except ValueError as exc:
            raise InvalidRequestError(
                f"'{constraint.param}' holds a JSON schema that is not valid JSON ({exc}); send a JSON object.",
                param=constraint.param,
            ) from None
        if not isinstance(schema, dict | bool):
            raise InvalidRequestError(
                f"'{constraint.param}' must hold a JSON schema (an object), not {type(schema).__name__}.",
                param=constraint.param,
            )
        problem = _schema_structure_error(schema)
        if problem is not None:
            raise InvalidRequestError(
                f"The JSON schema in '{constraint.param}' is malformed {problem}. Fix that part of the schema.",
                param=constraint.param,
            )
        return _json_grammar(strict_objects(schema)), schema
    if kind == "regex":
        import llguidance

        return llguidance.LLMatcher.grammar_from_regex(value), None
    if kind == "choice":
        choices = json.loads(value)
        alternatives = " | ".join(json.dumps(c) for c in choices)
        import llguidance

        return llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}"), None
    if kind == "grammar":
        import llguidance

        return llguidance.LLMatcher.grammar_from_lark(value), None
    raise AssertionError(f"unknown constraint kind {kind!r}")


def _json_grammar(schema: Any) -> str:
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=dict(JSON_OPTIONS))  # type: ignore[arg-type]


def llg_tokenizer(hf_tokenizer: Any, vocab_size: int, eos_token_ids: set[int] | None = None) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer, sized to the model's logits; every
    end-of-sequence id of the model ends a complete grammar."""
    import llguidance.hf

    eos = sorted(eos_token_ids) if eos_token_ids else None
    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size, eos_token=eos)


class GrammarCompiler:
    """API side: constraint -> validated grammar text, cached; see the module docstring."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int) -> None:
        self._hf_tokenizer = hf_tokenizer
        self.vocab_size = vocab_size
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llg_tokenizer(self._hf_tokenizer, self.vocab_size)
            return self._tokenizer

    def compile(self, constraint: Constraint) -> CompiledGrammar:
        """Blocking (compiles on a miss): call it off the event loop."""
        size = len(constraint.value.encode())
        if size > MAX_CONSTRAINT_BYTES:
            raise InvalidRequestError(
                f"The constraint in '{constraint.param}' is {size} bytes; at most {MAX_CONSTRAINT_BYTES} bytes "
                "(64 KiB) are accepted. Simplify the schema (use $defs for repeated parts).",
                param=constraint.param,
                code="schema_too_large",
            )
        key = (constraint.kind, constraint.value)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return CompiledGrammar(hit, 0.0, True)
        import llguidance

        started = time.perf_counter()
        grammar, schema = grammar_text(constraint)
        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)  # builds (so checks) it all
        spent = time.perf_counter() - started
        if matcher.is_error():
            raise InvalidRequestError(
                self._explain(constraint, matcher.get_error(), schema), param=constraint.param
            )
        with self._lock:
            self._cache[key] = grammar
            while len(self._cache) > GRAMMAR_CACHE_SIZE:
                self._cache.popitem(last=False)
        return CompiledGrammar(grammar, spent, False)

    @staticmethod
    def _explain(constraint: Constraint, error: str, schema: Any) -> str:
        error = error.strip().splitlines()[0] if error.strip() else "it could not be compiled"
        if constraint.kind == "json":
            where = locate_in_schema(schema, error)
            place = f" at {where}" if where else ""
            return (
                f"The JSON schema in '{constraint.param}' cannot be used for constrained decoding{place}: "
                f"{error}. Change or remove that part of the schema."
            )
        what = {"regex": "regular expression", "choice": "choice list", "grammar": "grammar"}.get(
            constraint.kind, "constraint"
        )
        return f"The {what} in '{constraint.param}' cannot be compiled: {error}."


# ---------------------------------------------------------------- engine core


class GuidedDecoding:
    """Engine-core side: matchers, token masks and their application; see the module docstring.

    ``bitmask``: [slots, ceil(vocab / 32)] int32 on the host, one row per batch slot.
    """

    def __init__(
        self,
        hf_tokenizer: Any,
        vocab_size: int,
        num_slots: int,
        device: torch.device,
        eos_token_ids: set[int] | None = None,
    ) -> None:
        import llguidance

        self._llg = llguidance
        self.eos_token_ids = eos_token_ids or set()
        self._closing: list[int] = []  # token ids preferred while closing, in order
        self.vocab_size = vocab_size
        self.device = device
        self._hf_tokenizer = hf_tokenizer
        self._tokenizer: Any = None
        self._templates: OrderedDict[str, Any] = OrderedDict()
        self._shortest: dict[str, int] = {}  # grammar -> its shortest output's length in tokens
        self.bitmask = torch.full((num_slots, (vocab_size + 31) // 32), -1, dtype=torch.int32)
        self._executor: Any = None
        # One helper thread: masks are computed there while the forward runs on this one.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-mask")
        self._bits = torch.arange(32, dtype=torch.int32, device=device)
        self.compile_seconds = 0.0  # cumulative, for the core's stats
        self.compiles = 0
        # llguidance's view of the tokenizer takes ~1 s for a 150K vocabulary: built on the helper
        # thread from the start, so the first constrained request does not stall a running batch.
        self._ready = self._pool.submit(self._start)

    def new_matcher(self, grammar: str) -> tuple[Any, int]:
        """A fresh matcher for ``grammar`` and its shortest output's length in tokens (0 if unknown);
        raises ``ValueError`` with the library's message if the grammar is bad."""
        template = self._templates.get(grammar)
        if template is None:
            self._ready.result()
            started = time.perf_counter()
            template = self._llg.LLMatcher(self._tokenizer, grammar, log_level=0)
            self.compile_seconds += time.perf_counter() - started
            self.compiles += 1
            if template.is_error():
                raise ValueError(template.get_error())
            self._shortest[grammar] = self.shortest_output(template)
            self._templates[grammar] = template
            while len(self._templates) > GRAMMAR_CACHE_SIZE:
                old, _ = self._templates.popitem(last=False)
                self._shortest.pop(old, None)
        else:
            self._templates.move_to_end(grammar)
        return template.deep_copy(), self._shortest.get(grammar, 0)

    def shortest_output(self, template: Any) -> int:
        """Tokens the closing policy needs to complete the grammar from its start (0 if it cannot
        within ``MAX_SHORTEST_OUTPUT``): closing tokens first, else the lowest allowed token id."""
        matcher = template.deep_copy()
        words = self.bitmask.shape[1]
        mask = torch.zeros(words, dtype=torch.int32)
        for n in range(MAX_SHORTEST_OUTPUT):
            if matcher.is_accepting() or matcher.is_stopped():
                return n + 1  # + the end-of-sequence token
            matcher.unsafe_compute_mask_ptr(mask.data_ptr(), words * 4)
            token = self._first_closing(mask)
            if token is None:
                nonzero = torch.nonzero(mask)
                if len(nonzero) == 0:
                    return 0
                w = int(nonzero[0, 0])
                word = int(mask[w]) & 0xFFFFFFFF
                token = w * 32 + (word & -word).bit_length() - 1
            if not matcher.consume_token(token):
                return 0
        return 0

    def _start(self) -> None:
        self._tokenizer = llg_tokenizer(self._hf_tokenizer, self.vocab_size, self.eos_token_ids)
        self._executor = self._llg.LLExecutor()
        self._closing = sorted(self.eos_token_ids)
        for text in CLOSING_TEXTS:
            ids = self._tokenizer.tokenize_str(text)
            if len(ids) == 1:
                self._closing.append(ids[0])

    def closing_token(self, slot: int) -> int | None:
        """The first closing token the slot's current mask allows, or None (keep the model's choice)."""
        return self._first_closing(self.bitmask[slot])

    def _first_closing(self, row: torch.Tensor) -> int | None:
        for token in self._closing:
            if (int(row[token >> 5]) >> (token & 31)) & 1:
                return token
        return None

    def start_masks(self, rows: list[tuple[Any, int]]) -> Future[None] | None:
        """Compute the masks of ``(matcher, slot)`` rows on the helper thread; None if there are none."""
        if not rows:
            return None
        return self._pool.submit(self._fill, rows)

    def _fill(self, rows: list[tuple[Any, int]]) -> None:
        words = self.bitmask.shape[1]
        self._executor.unsafe_compute_mask_ptr(
            rows, self.bitmask.data_ptr(), words * 4, self.bitmask.shape[0]
        )

    def allowed(self, slots: list[int]) -> torch.Tensor:
        """Which tokens each of these slots may sample next: [len(slots), vocab] bool on the device."""
        # The packed words cross to the device (vocab / 8 bytes a row), and are unpacked there.
        words = self.bitmask[torch.tensor(slots)].to(self.device)  # [rows, vocab / 32] int32
        bits = (words.unsqueeze(-1) >> self._bits) & 1  # [rows, vocab / 32, 32]
        return bits.reshape(len(slots), -1)[:, : self.vocab_size].bool()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
