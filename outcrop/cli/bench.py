"""``outcrop bench``: load a served model through the gateway, level by level, and report it.

    outcrop bench my-llama --concurrency 1,4,16,32 --max-tokens 64 --plot bench.png

Each level runs ``concurrency`` clients that send OpenAI ``/v1/completions`` requests back to
back (non-streaming, ``ignore_eos: true`` so every request makes exactly ``max_tokens`` tokens)
until the level's requests are done. The table is the one from the Salesforce case study of
Bedrock Custom Model Import: concurrency, p95 latency, requests/minute, tokens/s and how many
copies were running at the end of the level. ``--csv`` (and ``--json``) write the same numbers
for scripts; ``--plot`` draws tokens/s and p95 latency against concurrency with matplotlib, from
the optional extra ``outcrop[plot]``.

The load generator (``run_level``) only needs an OpenAI-compatible base URL, so the benchmarks
use it to send the same load straight to a copy.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer

from outcrop.cli.options import CliState, console, err_console, shared_options
from outcrop.errors import (
    ConfigError,
    InvalidRequestError,
    ModelFailedError,
    ServiceUnavailableError,
)

# A prompt of a few dozen tokens: long enough that prefill is not free, short enough that
# decode (what users pay for) dominates at the default 64 output tokens.
DEFAULT_PROMPT = "Summarise the quarterly report for the sales team in three short bullet points:"
# Why 4 x concurrency (and at least 16): every client sends several requests, so the level's
# steady state outweighs its ramp-up and tail, while a CPU run of 1,4,16,32 stays in minutes.
REQUESTS_PER_CLIENT = 4
MIN_REQUESTS_PER_LEVEL = 16
# Why 600 s: a max-length generation under full load on CPU can take minutes; a hung request
# should still end the run.
REQUEST_TIMEOUT_SECONDS = 600.0


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    concurrency: int
    latencies_seconds: list[float]
    completion_tokens: int
    seconds: float
    errors: int = 0
    first_error: str = ""
    copies_at_end: int | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies_seconds)

    def percentile_seconds(self, q: float) -> float:
        """Nearest-rank percentile of the successful requests' latencies (q in 0..1)."""
        ordered = sorted(self.latencies_seconds)
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def p95_seconds(self) -> float:
        return self.percentile_seconds(0.95)

    @property
    def requests_per_minute(self) -> float:
        return self.requests / self.seconds * 60 if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def parse_concurrency(text: str) -> list[int]:
    """``"1,4,16,32"`` -> ``[1, 4, 16, 32]``; OutcropError naming the bad value otherwise."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or any(not 1 <= c <= 4096 for c in levels):
        raise InvalidRequestError(
            f"--concurrency is {text!r}; give comma-separated client counts from 1 to 4096, e.g. 1,4,16,32."
        )
    return levels


def completion_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


async def run_level(
    base_url: str,
    body: dict[str, Any],
    concurrency: int,
    requests: int,
    on_done: Callable[[], None] | None = None,
    headers: dict[str, str] | None = None,
) -> LevelResult:
    """``concurrency`` clients send ``body`` to ``base_url``/v1/completions, ``requests`` in all."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=10.0)
    result = LevelResult(concurrency=concurrency, latencies_seconds=[], completion_tokens=0, seconds=0.0)
    remaining = requests

    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"), limits=limits, timeout=timeout, headers=headers
    ) as http:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    response = await http.post("/v1/completions", json=body)
                except httpx.ConnectError:
                    raise ServiceUnavailableError(
                        f"No server answers at {base_url}. Start one with `outcrop serve`, "
                        "or point --endpoint / OUTCROP_ENDPOINT at it."
                    ) from None
                except httpx.HTTPError as exc:
                    _record_error(result, f"{type(exc).__name__}: {exc}")
                    continue
                took = time.perf_counter() - started
                if response.status_code != 200:
                    _record_error(result, f"HTTP {response.status_code}: {response.text[:300]}")
                else:
                    result.latencies_seconds.append(took)
                    usage = response.json().get("usage") or {}
                    result.completion_tokens += int(usage.get("completion_tokens") or 0)
                if on_done is not None:
                    on_done()

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(min(concurrency, requests))))
        result.seconds = time.perf_counter() - began
    return result


def _record_error(result: LevelResult, message: str) -> None:
    result.errors += 1
    result.first_error = result.first_error or message


@dataclass
class BenchRun:
    """A whole ``outcrop bench`` run against a gateway."""

    endpoint: str
    model: str
    max_tokens: int
    levels: list[LevelResult] = field(default_factory=list)


def live_copies(copies: list[dict[str, Any]], model_name: str) -> int:
    """How many of the admin API's ``copies`` belong to ``model_name`` and are Starting or Ready."""
    return sum(1 for c in copies if c["modelName"] == model_name and c["state"] in ("Starting", "Ready"))


def results_rows(run: BenchRun) -> list[dict[str, Any]]:
    """One dict per level, the table's numbers unrounded: what ``--csv`` and ``--json`` write."""
    return [
        {
            "concurrency": level.concurrency,
            "requests": level.requests,
            "errors": level.errors,
            "p95_latency_seconds": level.p95_seconds,
            "requests_per_minute": level.requests_per_minute,
            "tokens_per_second": level.tokens_per_second,
            "copies_at_end": level.copies_at_end,
        }
        for level in run.levels
    ]


def results_table(run: BenchRun) -> Any:
    """The case-study table as a rich Table (five columns: fits an 80-column terminal)."""
    from rich.table import Table

    counts = ", ".join(str(level.requests + level.errors) for level in run.levels)
    failures = [f"{level.errors} failed at {level.concurrency}" for level in run.levels if level.errors]
    table = Table(
        title=f"{run.model}: {run.max_tokens} tokens per request, through {run.endpoint}",
        title_justify="left",
        caption=f"requests per level: {counts}" + (f"; {', '.join(failures)}" if failures else ""),
        caption_justify="left",
    )
    for name in ("concurrency", "p95 latency (s)", "requests/minute", "tokens/s", "copies at end"):
        table.add_column(name, justify="right", no_wrap=True)
    for level in run.levels:
        table.add_row(
            str(level.concurrency),
            f"{level.p95_seconds:.2f}",
            f"{level.requests_per_minute:,.0f}",
            f"{level.tokens_per_second:,.1f}",
            "-" if level.copies_at_end is None else str(level.copies_at_end),
        )
    return table


@shared_options(endpoint=True)
def bench_command(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model name or ARN, as imported."),
    concurrency: str = typer.Option(
        "1,4,16,32", "--concurrency", "-c", help="Comma-separated concurrent clients, one level each."
    ),
    requests: int | None = typer.Option(
        None,
        "--requests",
        "-n",
        min=1,
        help=f"Requests per level (default: {REQUESTS_PER_CLIENT} per client, at least {MIN_REQUESTS_PER_LEVEL}).",
    ),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Tokens each request generates."),
    prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", help="The prompt every request sends."),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Write a PNG of tokens/s and p95 latency against concurrency here (needs `pip install 'outcrop[plot]'`).",
    ),
    csv_path: Path | None = typer.Option(
        None, "--csv", help="Write the results here as CSV, one row per concurrency level."
    ),
    warmup: bool = typer.Option(
        True,
        "--warmup/--no-warmup",
        help="Send one untimed request first, so a scaled-to-zero model's cold start is not measured.",
    ),
) -> None:
    """Benchmark a model through the gateway: p95 latency, requests/minute and tokens/s per concurrency.

    Requests are OpenAI completions with ignore_eos, so each one makes exactly --max-tokens tokens.

    Examples:

        outcrop bench my-llama

        outcrop bench my-llama --concurrency 1,4,16,32 --max-tokens 64 --plot bench.png --csv bench.csv

        outcrop bench my-llama -c 8 -n 200 --endpoint http://gateway:8080 --json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cli = CliState.of(ctx)
    levels = parse_concurrency(concurrency)
    if plot is not None and not plotting_available():
        err_console.print(f"[yellow]note:[/] {PLOT_HINT} The results still come as a table, --csv or --json.")
    client = cli.client()
    record = client.model_detail(model)
    name = record["modelName"]
    body = completion_body(name, prompt, max_tokens)
    # The CLI client's credentials (if it carries any), so the load is authorised like it.
    headers = client.auth_headers
    run = BenchRun(endpoint=client.endpoint, model=name, max_tokens=max_tokens)

    if warmup:
        with err_console.status(f"Warming up {name} (a scaled-to-zero model starts a copy first)..."):
            first = asyncio.run(run_level(client.endpoint, body, 1, 1, headers=headers))
        if first.errors:
            _raise_failed(name, first)
        err_console.print(f"warm-up request: {first.seconds:.2f} s")

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        for level in levels:
            count = requests or max(MIN_REQUESTS_PER_LEVEL, REQUESTS_PER_CLIENT * level)
            advance = functools.partial(
                progress.advance, progress.add_task(f"concurrency {level:>4}", total=count)
            )
            result = asyncio.run(
                run_level(client.endpoint, body, level, count, on_done=advance, headers=headers)
            )
            if not result.latencies_seconds:
                _raise_failed(name, result)
            result.copies_at_end = live_copies(client.copies(), name)
            run.levels.append(result)

    if not cli.emit_json(
        {
            "endpoint": run.endpoint,
            "model": run.model,
            "maxTokens": run.max_tokens,
            "levels": results_rows(run),
        }
    ):
        console.print(results_table(run))
    if csv_path is not None:
        write_csv(csv_path, run)
        err_console.print(f"results written to {csv_path}")
    if plot is not None:
        write_plot(plot, run)
        err_console.print(f"plot written to {plot}")


def _raise_failed(model: str, result: LevelResult) -> None:
    raise ModelFailedError(
        f"All {result.errors} request(s) to {model} failed at concurrency {result.concurrency}; "
        f"the first answer was {result.first_error}"
    )


def write_csv(path: Path, run: BenchRun) -> None:
    """The results as CSV (``results_rows``' columns), for spreadsheets and scripts."""
    rows = results_rows(run)
    try:
        with path.expanduser().open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["concurrency"])
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise InvalidRequestError(
            f"Cannot write the results to {path}: {exc.strerror}; pick a writable --csv path."
        ) from None


# -- plot -------------------------------------------------------------------------------

PLOT_HINT = "--plot draws with matplotlib, which is not installed: pip install 'outcrop[plot]'."
# 960 x 440 pixels: two panels side by side, readable on a laptop screen and in a README.
PLOT_SIZE_INCHES = (9.6, 4.4)
PLOT_DPI = 100


def plotting_available() -> bool:
    """Whether matplotlib (the ``outcrop[plot]`` extra) can be imported."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def render_plot(run: BenchRun) -> Any:
    """A matplotlib Figure with two panels: tokens/s and p95 latency (s) against concurrency."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(PLOT_HINT) from None

    figure = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI, layout="constrained")
    figure.suptitle(f"outcrop bench {run.model}, {run.max_tokens} tokens per request")
    concurrency = [level.concurrency for level in run.levels]
    panels = (
        ("tokens/s", [level.tokens_per_second for level in run.levels], "tab:blue"),
        ("p95 latency (s)", [level.p95_seconds for level in run.levels], "tab:orange"),
    )
    for axes, (label, values, color) in zip(figure.subplots(1, 2), panels, strict=True):
        axes.plot(concurrency, values, marker="s", color=color)
        axes.set_xlabel("concurrency")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.set_xticks(concurrency)
        axes.grid(alpha=0.3)
    return figure


def write_plot(path: Path, run: BenchRun) -> None:
    figure = render_plot(run)
    try:
        figure.savefig(path.expanduser(), format="png")
    except OSError as exc:
        raise InvalidRequestError(
            f"Cannot write the plot to {path}: {exc.strerror}; pick a writable --plot path."
        ) from None
