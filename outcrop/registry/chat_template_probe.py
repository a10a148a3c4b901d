"""Render a chat template once, in a separate process, before a model is imported.

A chat template is a program (Jinja) shipped with the model; compiling it proves little, since
one that raises or loops does so only when rendered, i.e. on every chat request; and even
compiling is unsafe in the server (Jinja folds constants, so ``{{ 'x' * 10**10 }}`` allocates
10 GB at compile time). At import, :func:`render_sample` runs this module as a child process
that compiles the template and renders a sample conversation
in a sandbox built the way chat templates expect (:func:`template_environment`: jinja2's
``ImmutableSandboxedEnvironment`` with ``raise_exception``, ``strftime_now``, a ``tojson`` that
takes transformers' options, a no-op ``{% generation %}`` block ...; built on jinja2's public API,
not on transformers' private helper), under a time limit and a memory limit; the parent kills it
if it outlives both. The import worker never runs the template itself, so a template that
loops or eats memory costs one child process, not the server.

    failure = render_sample(template, {"bos_token": "<s>"}, seconds=5.0)   # None: it rendered
    # else TemplateFailure(stage="compile" | "render", error="TemplateError: ...")

Protocol: the parent writes ``{"template", "special_tokens", "seconds"}`` as JSON on stdin;
the child answers ``{"stage": ..., "error": null | "..."}`` as JSON on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

# Conversations tried in order; the template passes if one renders. Many templates reject a
# system message (Mistral v0.1, Gemma) or demand alternating roles, and that is their right;
# one that renders none of these cannot serve a chat request at all.
SAMPLE_CONVERSATIONS: list[list[dict[str, str]]] = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello! What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    [
        {"role": "user", "content": "Hello! What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    [{"role": "user", "content": "Hello!"}],
]
# Python + jinja2 start in well under 1 s on an idle core; a loaded machine may
# take several times that. The render's own limit starts after start-up, inside the child.
STARTUP_SECONDS = 60.0
# A template that needs more memory than this for a four-message conversation is broken.
MAX_RENDER_BYTES = 1024**3


@dataclass(frozen=True)
class TemplateFailure:
    stage: str  # "compile": not valid Jinja; "render": fails, loops or eats memory on a conversation
    error: str  # "TemplateError: ...", "rendering did not finish within 5 s ..."


def render_sample(template: str, special_tokens: dict[str, str], seconds: float) -> TemplateFailure | None:
    """Compile ``template`` and render the sample conversations in a child process; None if one renders."""
    request = json.dumps({"template": template, "special_tokens": special_tokens, "seconds": seconds})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "outcrop.registry.chat_template_probe"],
            input=request,
            capture_output=True,
            text=True,
            timeout=seconds + STARTUP_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return TemplateFailure(
            "render", f"rendering did not finish within {seconds:g} s (it loops, or does far too much work)"
        )
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        error = answer["error"]
        return None if error is None else TemplateFailure(str(answer["stage"]), str(error))
    except (ValueError, IndexError, KeyError, TypeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return TemplateFailure(
            "render", f"the process rendering it died (exit status {done.returncode}: {tail})"
        )


def template_environment() -> jinja2.Environment:
    """The sandbox chat templates are written for: what transformers' ``apply_chat_template`` offers them.

    Imported lazily: only the child process needs jinja2.
    """
    import json as json_module
    from datetime import datetime

    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.parser
    import jinja2.sandbox
    import jinja2.utils

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` marks an assistant span; rendering ignores it."""

        tags = {"generation"}

        def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | str | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        # jinja2's own tojson escapes HTML (<, >, &) and takes only indent; templates expect plain JSON
        return json_module.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    class SafeNamespace(jinja2.utils.Namespace):
        """``namespace(...)`` that refuses underscore names, which lead towards CPython internals."""

        def __init__(
            *args: Any, **kwargs: Any
        ) -> None:  # jinja2's signature trick: allows namespace(self=...)
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                SafeNamespace.check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            SafeNamespace.check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check_name(name: object) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}; "
                    "rename the attribute"
                )

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = SafeNamespace
    return env


def _render(request: dict[str, Any]) -> tuple[str, str | None]:
    """(stage reached, error or None)."""
    import resource
    import signal

    template: str = request["template"]
    special_tokens: dict[str, str] = request["special_tokens"]
    seconds = float(request["seconds"])

    def out_of_time(_signum: int, _frame: object) -> None:
        raise TimeoutError(
            f"rendering did not finish within {seconds:g} s (it loops, or does far too much work)"
        )

    try:  # on top of what start-up used; Linux only (elsewhere the parent's timeout still holds)
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + MAX_RENDER_BYTES, used + MAX_RENDER_BYTES))
    except (OSError, ValueError):
        pass
    signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    stage = "compile"
    first_error: str | None = None
    try:
        compiled = template_environment().from_string(template)
        stage = "render"
        for messages in SAMPLE_CONVERSATIONS:
            try:
                compiled.render(messages=messages, add_generation_prompt=True, **special_tokens)
                return stage, None
            except (TimeoutError, MemoryError):
                raise
            except Exception as exc:
                first_error = first_error or f"{type(exc).__name__}: {str(exc)[:300]}"
    except TimeoutError as exc:
        return stage, str(exc)
    except MemoryError:
        return stage, f"it needs more than {MAX_RENDER_BYTES // 1024**2} MiB of memory"
    except Exception as exc:
        return stage, f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return stage, first_error


def main() -> None:
    stage, error = _render(json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps({"stage": stage, "error": error}) + "\n")


if __name__ == "__main__":
    main()
