"""Render a chat template once, in a separate process, before a model is imported.

A chat template is a program (Jinja) shipped with the model; compiling it proves little, since
one that raises or loops does so only when rendered, i.e. on every chat request; and even
compiling is unsafe in the server (Jinja folds constants, so ``{{ 'x' * 10**10 }}`` allocates
10 GB at compile time). At import, :func:`render_sample` runs this module as a child process
that compiles the template and renders a sample conversation
in the sandbox transformers uses (``ImmutableSandboxedEnvironment`` with ``raise_exception``,
``tojson``, ``{% generation %}`` ...), under a time limit and a memory limit; the parent kills it
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
from typing import Any

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
# Python + transformers' template helpers start in ~1 s on an idle core; a loaded machine may
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


def _render(request: dict[str, Any]) -> tuple[str, str | None]:
    """(stage reached, error or None)."""
    import resource
    import signal

    from transformers.utils.chat_template_utils import _compile_jinja_template

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
        compiled = _compile_jinja_template(template)
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
