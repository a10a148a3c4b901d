"""The console in a real Chromium: what each built-in policy sees, and the charts.

Each key signs in with a ``/console#key=...`` link; sections its policy may read fill, the others
say "not allowed for this key" in place, and actions it may not perform are not offered.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import ConsoleServer
from tests.conftest import TEST_API_KEY

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
expect: Any = pytest.importorskip("playwright.sync_api").expect

DENIED = "not allowed for this key"


def sign_in(page: Any, server: ConsoleServer, key: str, view: str = "") -> list[str]:
    """Opens the console with a #key= link; returns the list script errors and CSP violations go to."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{server.url}/console#key={key}")
    expect(page.locator("#status")).to_have_text(re.compile(r"updated|cannot read"))
    if view:
        page.goto(f"{server.url}/console#{view}")
    return problems


def test_the_admin_sees_every_section_and_the_key_leaves_the_address_bar(
    page: Any, console_server: ConsoleServer
) -> None:
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    problems = sign_in(page, console_server, TEST_API_KEY)

    assert sent and all(TEST_API_KEY not in url for url, _ in sent)  # the key is in no URL the server sees
    assert all(auth == f"Bearer {TEST_API_KEY}" for url, auth in sent if not url.endswith("/console"))
    assert "key=" not in page.url and page.evaluate("sessionStorage.getItem('outcrop-key')") == TEST_API_KEY
    expect(page.locator("#whoami")).to_contain_text("(admin)")
    expect(page.locator("#models")).to_contain_text(console_server.model)
    expect(page.locator("#imports")).to_contain_text("Completed")
    for table in ("models", "copies", "imports", "batches", "endpoints"):
        expect(page.locator(f"#{table}")).not_to_contain_text(DENIED)
    page.get_by_role("link", name="Keys").click()
    expect(page.locator("#keys")).to_contain_text("admin")
    expect(page.locator("#key-create-form")).to_be_visible()
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("#audit tr").first).to_be_visible()
    expect(page.locator("#audit")).not_to_contain_text(DENIED)
    page.get_by_role("link", name="Overview").click()
    page.locator("#models").get_by_role("link", name=console_server.model).click()
    expect(page.locator("#model-detail")).to_contain_text(
        "float32"
    )  # the fields `outcrop models show` prints
    expect(page.locator("#model-detail")).to_contain_text("arn:aws:bedrock:")
    for action in ("Warm", "Save scaling", "Delete model…"):
        expect(page.get_by_role("button", name=action)).to_be_visible()
    page.goto(f"{console_server.url}/console#model/no-such-model")
    expect(page.locator("#model-detail")).to_contain_text("no-such-model")  # the server's not-found message
    expect(page.locator("#model-actions")).to_be_hidden()
    assert problems == []


def test_an_invoke_only_key_sees_its_models_and_may_use_the_playground_but_nothing_else(
    page: Any, console_server: ConsoleServer, make_key: Callable[..., str]
) -> None:
    problems = sign_in(page, console_server, make_key("invoke-only", model=console_server.model))

    expect(page.locator("#whoami")).to_contain_text("(invoke-only)")
    expect(page.locator("#models")).to_contain_text(console_server.model)
    for table in ("copies", "imports", "batches", "endpoints"):
        expect(page.locator(f"#{table}")).to_contain_text(DENIED)
    expect(page.locator("#status")).to_contain_text("4 section(s) not allowed for this key")
    page.get_by_role("link", name="Playground").click()
    expect(page.locator("#pg-model")).to_have_value(console_server.model)
    page.get_by_role("link", name="Keys").click()
    expect(page.locator("#keys")).to_contain_text(DENIED)
    expect(page.locator("#key-create-form")).to_be_hidden()
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("#audit")).to_contain_text(DENIED)
    page.goto(f"{console_server.url}/console#model/{console_server.model}")
    expect(page.locator("#model-detail")).to_contain_text("float32")  # may read its own model
    expect(page.locator("#model-copies")).to_contain_text(DENIED)
    expect(page.locator("#model-actions")).to_contain_text("Warm: not allowed for this key")
    expect(page.locator("#model-actions")).to_contain_text("Delete: not allowed for this key")
    expect(page.get_by_role("button", name="Delete model…")).to_be_hidden()
    assert problems == []


def test_a_read_only_key_reads_everything_but_keys_and_invokes_nothing(
    page: Any, console_server: ConsoleServer, make_key: Callable[..., str]
) -> None:
    problems = sign_in(page, console_server, make_key("read-only"))

    expect(page.locator("#whoami")).to_contain_text("(read-only)")
    expect(page.locator("#models")).to_contain_text(console_server.model)
    expect(page.locator("#imports")).to_contain_text("Completed")
    for table in ("models", "copies", "imports", "batches", "endpoints"):
        expect(page.locator(f"#{table}")).not_to_contain_text(DENIED)
    page.get_by_role("link", name="Playground").click()
    expect(page.locator("#playground-denied")).to_contain_text(DENIED)
    expect(page.locator("#playground-form")).to_be_hidden()
    page.get_by_role("link", name="Import").click()
    expect(page.locator("#import-jobs")).to_contain_text("Completed")
    expect(page.locator("#import-denied")).to_have_text("Importing: not allowed for this key")
    expect(page.locator("#import-form")).to_be_hidden()
    page.get_by_role("link", name="Keys").click()
    expect(page.locator("#keys")).to_contain_text(DENIED)
    page.goto(f"{console_server.url}/console#model/{console_server.model}")
    expect(page.locator("#model-actions")).to_contain_text("Warm: not allowed for this key")
    assert problems == []


def test_an_unknown_key_is_named_as_such_and_no_key_asks_for_one(
    page: Any, console_server: ConsoleServer
) -> None:
    sign_in(page, console_server, "ocp-not-a-key")
    expect(page.locator("#models")).to_contain_text("the key is not valid")
    expect(page.locator("#status")).to_contain_text("The API key is not valid")

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#copies")).to_contain_text("enter an API key above")
    assert page.evaluate("sessionStorage.getItem('outcrop-key')") is None


def _stats(model: str, minutes: int = 60, step: int = 10) -> dict[str, Any]:
    now = int(time.time()) // step * step
    n = minutes * 60 // step
    ramp = [None if i < n - 30 else float(i % 7) for i in range(n)]
    names = ("requests", "errors", "throttles", "latencyP50Ms", "latencyP95Ms", "ttftP50Ms", "ttftP95Ms")
    return {
        "stepSeconds": step,
        "timestamps": [now - (n - 1 - i) * step for i in range(n)],
        "series": {**{k: ramp for k in names}, "tokensPerSecond": ramp, "queueDepth": [None] * n},
        "copies": {model: [1.0] * n, "other": [0.0] * n},
    }


def test_charts_draw_the_last_hour_as_inline_svg_and_a_missing_endpoint_says_so(
    page: Any, console_server: ConsoleServer
) -> None:
    problems = sign_in(page, console_server, TEST_API_KEY)
    page.route("**/outcrop/stats*", lambda route: route.fulfill(status=404, json={"detail": "Not Found"}))
    page.get_by_role("link", name="Charts").click()
    expect(page.locator("#charts")).to_contain_text("not available on this server")

    page.unroute("**/outcrop/stats*")
    body = json.dumps(_stats(console_server.model))
    page.route(
        "**/outcrop/stats*",
        lambda route: route.fulfill(status=200, body=body, content_type="application/json"),
    )
    page.reload()
    charts = page.locator("#charts figure")
    expect(charts).to_have_count(7)
    for title in (
        "Requests",
        "Errors and throttles",
        "Latency",
        "Time to first token",
        "Tokens per second",
        "Copies per model",
        "Queue depth",
    ):
        expect(page.locator("#charts figcaption", has_text=title)).to_have_count(1)
    assert page.locator("#charts svg polyline").count() >= 9  # one line per series with data
    expect(page.locator("#charts figure", has_text="Queue depth")).to_contain_text("no data in the last hour")
    expect(page.locator("#charts figure", has_text="Copies per model")).to_contain_text("other")
    # The model page draws only that model's copies.
    page.goto(f"{console_server.url}/console#model/{console_server.model}")
    copies = page.locator("#model-charts figure", has_text=f"Copies of {console_server.model}")
    expect(copies).to_contain_text(console_server.model)
    expect(copies).not_to_contain_text("other")
    assert problems == []  # the SVG is drawn within the page's Content-Security-Policy
