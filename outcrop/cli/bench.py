"""``outcrop bench``: load a served model through the gateway, level by level, and report it.

    outcrop bench my-llama --concurrency 1,4,16,32 --max-tokens 64 --plot bench.png

Each level runs ``concurrency`` clients that send OpenAI ``/v1/completions`` requests back to
back (non-streaming, ``ignore_eos: true`` so every request makes exactly ``max_tokens`` tokens)
until the level's requests are done. The table is the one from the Salesforce case study of
Bedrock Custom Model Import: concurrency, p95 latency, requests/minute, tokens/s and how many
copies were running at the end of the level. ``--plot`` writes a PNG of tokens/s and p95 latency
against concurrency, drawn by a small PNG writer here (no plotting library needed).

The load generator (``run_level``) only needs an OpenAI-compatible base URL, so the benchmarks
use it to send the same load straight to a copy.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer

from outcrop.errors import InvalidRequestError, ModelFailedError, ServiceUnavailableError

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


def bench_command(
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
        None, "--plot", help="Write a PNG of tokens/s and p95 latency against concurrency here."
    ),
    warmup: bool = typer.Option(
        True,
        "--warmup/--no-warmup",
        help="Send one untimed request first, so a scaled-to-zero model's cold start is not measured.",
    ),
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        "-e",
        help="URL of the Outcrop server (default: $OUTCROP_ENDPOINT or http://127.0.0.1:8080).",
    ),
) -> None:
    """Benchmark a model through the gateway: p95 latency, requests/minute and tokens/s per concurrency.

    Requests are OpenAI completions with ignore_eos, so each one makes exactly --max-tokens tokens.

    Examples:

        outcrop bench my-llama

        outcrop bench my-llama --concurrency 1,4,16,32 --max-tokens 64 --plot bench.png

        outcrop bench my-llama -c 8 -n 200 --endpoint http://gateway:8080
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from outcrop.cli import main as cli

    levels = cli._run(lambda: parse_concurrency(concurrency))
    client = cli._client(endpoint)
    record = cli._run(lambda: client.model_detail(model))
    name = record["modelName"]
    body = completion_body(name, prompt, max_tokens)
    # The CLI client's credentials (if it carries any), so the load is authorised like it.
    headers = {k: v for k, v in client._http.headers.items() if k.lower() == "authorization"}
    run = BenchRun(endpoint=client.endpoint, model=name, max_tokens=max_tokens)

    if warmup:
        with cli.err_console.status(f"Warming up {name} (a scaled-to-zero model starts a copy first)..."):
            first = cli._run(lambda: asyncio.run(run_level(client.endpoint, body, 1, 1, headers=headers)))
        if first.errors:
            cli._run(lambda: _raise_failed(name, first))
        cli.err_console.print(f"warm-up request: {first.seconds:.2f} s")

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]

    def measure() -> None:
        with Progress(*columns, console=cli.err_console, transient=True) as progress:
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

    cli._run(measure)
    cli.console.print(results_table(run))
    if plot is not None:
        cli._run(lambda: write_plot(plot, run))
        cli.err_console.print(f"plot written to {plot}")


def _raise_failed(model: str, result: LevelResult) -> None:
    raise ModelFailedError(
        f"All {result.errors} request(s) to {model} failed at concurrency {result.concurrency}; "
        f"the first answer was {result.first_error}"
    )


# -- PNG plot -------------------------------------------------------------------------

# A 5x7 bitmap font for the labels: rows top to bottom, '#' is ink.
_GLYPHS: dict[str, str] = {
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    "a": ".....|.....|.###.|....#|.####|#...#|.####",
    "b": "#....|#....|#.##.|##..#|#...#|#...#|####.",
    "c": ".....|.....|.###.|#....|#....|#...#|.###.",
    "d": "....#|....#|.##.#|#..##|#...#|#...#|.####",
    "e": ".....|.....|.###.|#...#|#####|#....|.###.",
    "f": "..##.|.#..#|.#...|###..|.#...|.#...|.#...",
    "g": ".....|.####|#...#|#...#|.####|....#|.###.",
    "h": "#....|#....|#.##.|##..#|#...#|#...#|#...#",
    "i": "..#..|.....|.##..|..#..|..#..|..#..|.###.",
    "j": "...#.|.....|..##.|...#.|...#.|#..#.|.##..",
    "k": "#....|#....|#..#.|#.#..|##...|#.#..|#..#.",
    "l": ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
    "m": ".....|.....|##.#.|#.#.#|#.#.#|#...#|#...#",
    "n": ".....|.....|#.##.|##..#|#...#|#...#|#...#",
    "o": ".....|.....|.###.|#...#|#...#|#...#|.###.",
    "p": ".....|.....|####.|#...#|####.|#....|#....",
    "q": ".....|.....|.##.#|#..##|.####|....#|....#",
    "r": ".....|.....|#.##.|##..#|#....|#....|#....",
    "s": ".....|.....|.###.|#....|.###.|....#|####.",
    "t": ".#...|.#...|###..|.#...|.#...|.#..#|..##.",
    "u": ".....|.....|#...#|#...#|#...#|#..##|.##.#",
    "v": ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
    "w": ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.",
    "x": ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
    "y": ".....|.....|#...#|#...#|.####|....#|.###.",
    "z": ".....|.....|#####|...#.|..#..|.#...|#####",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    "/": ".....|....#|...#.|..#..|.#...|#....|.....",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "-": ".....|.....|.....|#####|.....|.....|.....",
    "_": ".....|.....|.....|.....|.....|.....|#####",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    " ": ".....|.....|.....|.....|.....|.....|.....",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
}
_FONT_SCALE = 2  # 10x14-pixel glyphs
_ADVANCE = 6 * _FONT_SCALE

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
INK: Color = (40, 40, 40)
GRID: Color = (225, 225, 225)
BLUE: Color = (31, 119, 180)
ORANGE: Color = (230, 110, 20)


class Canvas:
    """An RGB pixel buffer with the few drawing operations a line chart needs."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            for x in range(min(x0, x1), max(x0, x1) + 1):
                self.dot(x, y, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        half = width // 2
        for s in range(steps + 1):
            x = round(x0 + (x1 - x0) * s / steps)
            y = round(y0 + (y1 - y0) * s / steps)
            self.rect(x - half, y - half, x - half + width - 1, y - half + width - 1, color)

    def text(self, x: int, y: int, text: str, color: Color = INK, anchor: str = "left") -> None:
        """Draw ``text`` with its top at ``y``; ``anchor`` is where ``x`` is: left, center or right."""
        width = text_width(text)
        if anchor == "center":
            x -= width // 2
        elif anchor == "right":
            x -= width
        for i, ch in enumerate(text.lower()):
            rows = _GLYPHS.get(ch, _GLYPHS["?"]).split("|")
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    if cell == "#":
                        gx, gy = x + i * _ADVANCE + c * _FONT_SCALE, y + r * _FONT_SCALE
                        self.rect(gx, gy, gx + _FONT_SCALE - 1, gy + _FONT_SCALE - 1, color)

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def text_width(text: str) -> int:
    return len(text) * _ADVANCE - _FONT_SCALE


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``value`` (axis tops read well)."""
    if value <= 0 or math.isnan(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power


def _tick_label(value: float, top: float) -> str:
    if top >= 10:
        return f"{value:,.0f}"
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


def _panel(
    canvas: Canvas, left: int, top: int, width: int, height: int, title: str,
    xs: Sequence[int], ys: Sequence[float], color: Color,
) -> None:  # fmt: skip
    """One line chart: ``ys`` against the categorical ``xs`` (evenly spaced), axis from 0."""
    canvas.text(left + width // 2, top, title, color, anchor="center")
    plot_top, plot_bottom = top + 30, top + height - 40
    plot_left, plot_right = left + 70, left + width - 15
    finite = [y for y in ys if not math.isnan(y)]
    y_top = nice_ceiling(max(finite) if finite else 1.0)
    for i in range(6):  # grid and y ticks: fifths of a 1/2/2.5/5 x 10^k top are round numbers
        value = y_top * i / 5
        y = plot_bottom - round((plot_bottom - plot_top) * i / 5)
        canvas.line(plot_left, y, plot_right, y, GRID)
        canvas.text(plot_left - 8, y - 7, _tick_label(value, y_top), anchor="right")
    canvas.line(plot_left, plot_top, plot_left, plot_bottom, INK)
    canvas.line(plot_left, plot_bottom, plot_right, plot_bottom, INK)
    n = len(xs)
    span = plot_right - plot_left - 40

    def px(i: int) -> int:
        return plot_left + 20 + (round(span * i / (n - 1)) if n > 1 else span // 2)

    def py(v: float) -> int:
        return plot_bottom - round((plot_bottom - plot_top) * v / y_top)

    for i, x in enumerate(xs):
        canvas.line(px(i), plot_bottom, px(i), plot_bottom + 5, INK)
        canvas.text(px(i), plot_bottom + 10, str(x), anchor="center")
    canvas.text((plot_left + plot_right) // 2, plot_bottom + 26, "concurrency", anchor="center")
    points = [(px(i), py(v)) for i, v in enumerate(ys) if not math.isnan(v)]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        canvas.line(x0, y0, x1, y1, color, width=3)
    for x, y in points:
        canvas.rect(x - 4, y - 4, x + 4, y + 4, color)


def render_plot(run: BenchRun, width: int = 960, height: int = 440) -> bytes:
    """A PNG with two panels: tokens/s and p95 latency (s) against concurrency."""
    canvas = Canvas(width, height)
    canvas.text(
        width // 2, 12, f"outcrop bench {run.model}, {run.max_tokens} tokens per request", anchor="center"
    )
    xs = [level.concurrency for level in run.levels]
    half = width // 2
    _panel(
        canvas, 0, 44, half, height - 50, "tokens/s", xs, [lv.tokens_per_second for lv in run.levels], BLUE
    )
    _panel(
        canvas,
        half,
        44,
        half,
        height - 50,
        "p95 latency (s)",
        xs,
        [lv.p95_seconds for lv in run.levels],
        ORANGE,
    )
    return canvas.png()


def write_plot(path: Path, run: BenchRun) -> None:
    try:
        path.expanduser().write_bytes(render_plot(run))
    except OSError as exc:
        raise InvalidRequestError(
            f"Cannot write the plot to {path}: {exc.strerror}; pick a writable --plot path."
        ) from None
