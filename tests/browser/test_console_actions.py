"""The console's actions in a real Chromium: playground streaming, import (with a failing model),
warm and delete from the model page, keys, and the narrow layout.

One server for the module; the tests run in file order and build on each other's state
(the import test imports the model that the warm/delete test deletes).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ConsoleServer
from tests.conftest import TEST_API_KEY, api, boto3_client

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
expect: Any = pytest.importorskip("playwright.sync_api").expect


def sign_in(page: Any, server: ConsoleServer, view: str, key: str = TEST_API_KEY) -> None:
    page.goto(f"{server.url}/console#key={key}")
    expect(page.locator("#whoami")).to_contain_text("signed in as")
    page.goto(f"{server.url}/console#{view}")


def test_the_playground_streams_an_answer_with_its_ttft_and_the_same_call_as_code(
    page: Any, console_server: ConsoleServer
) -> None:
    sign_in(page, console_server, "playground")
    expect(page.locator("#pg-model")).to_have_value(console_server.model)
    page.get_by_label("Max tokens", exact=True).fill("12")
    page.get_by_label("Temperature", exact=True).fill("0.5")
    page.get_by_label("Prompt", exact=True).fill("Hello there")
    page.get_by_role("button", name="Send").click()

    expect(page.locator("#pg-stats")).to_contain_text("TTFT", timeout=60_000)
    expect(page.locator("#pg-stats")).to_contain_text("tokens/s")
    assert page.locator("#pg-output").text_content()  # the streamed tokens
    boto3_code = page.locator("#code-boto3").text_content()
    openai_code = page.locator("#code-openai").text_content()
    assert "converse_stream(" in boto3_code and '"temperature": 0.5' in boto3_code
    assert "chat.completions.create(" in openai_code and "max_tokens=12" in openai_code
    assert f'model="{console_server.model}"' in openai_code and '"Hello there"' in openai_code
    compile(boto3_code, "boto3", "exec")  # what the Copy button copies is valid Python
    compile(openai_code, "openai", "exec")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console_server.url)
    page.get_by_role("button", name="Copy OpenAI code").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == openai_code

    page.get_by_label("Mode", exact=True).select_option("completion")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pg-stats")).to_contain_text("TTFT", timeout=60_000)
    assert "invoke_model_with_response_stream(" in page.locator("#code-boto3").text_content()
    assert "completions.create(" in page.locator("#code-openai").text_content()


def test_min_and_max_copies_are_set_from_the_model_page_and_the_charts_show_this_traffic(
    page: Any, console_server: ConsoleServer
) -> None:
    if api.get(f"{console_server.url}/outcrop/stats").status_code == 404:  # c2-api's endpoints not merged yet
        pytest.skip("this server has no /outcrop/stats or /outcrop/models/{id}/scaling yet")
    sign_in(page, console_server, f"model/{console_server.model}")
    expect(page.locator("#model-detail")).to_contain_text("Min / max copies")
    page.get_by_label("Min copies", exact=True).fill("0")
    page.get_by_label("Max copies", exact=True).fill("2")
    page.get_by_role("button", name="Save scaling").click()
    expect(page.locator("#model-action-result")).to_contain_text("Saved: min 0, max 2 copies.")
    expect(page.locator("#model-detail")).to_contain_text("0 / 2")
    detail = api.get(f"{console_server.url}/outcrop/models/{console_server.model}").json()
    assert (detail["scaling"]["minCopies"], detail["scaling"]["maxCopies"]) == (0, 2)
    page.get_by_label("Min copies", exact=True).fill("2")
    page.get_by_label("Max copies", exact=True).fill("1")
    page.get_by_role("button", name="Save scaling").click()
    expect(page.locator("#model-action-result")).to_contain_text(
        "Cannot set scaling"
    )  # min > max: the server's reason

    page.get_by_role("link", name="Charts").click()
    requests = page.locator("#charts figure", has_text="Requests")
    expect(requests.locator("polyline, circle").first).to_be_attached()  # the playground's calls above
    expect(requests).not_to_contain_text("no data in the last hour")


def _failing_folder(root: Path, tiny: Path) -> Path:
    bad = root / "bad-model"
    shutil.copytree(tiny, bad)
    config = json.loads((bad / "config.json").read_text())
    config["model_type"] = "gpt_neox"
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04\x95not-really-a-pickle")
    return bad


def test_an_import_from_the_console_shows_completed_and_a_failing_one_its_reasons_as_bullets(
    page: Any, console_server: ConsoleServer, tiny_model_cache: Callable[..., Path]
) -> None:
    good = console_server.server.import_root / "second"
    shutil.copytree(tiny_model_cache(family="llama"), good)
    bad = _failing_folder(console_server.server.import_root, tiny_model_cache(family="llama"))
    sign_in(page, console_server, "import")

    page.get_by_label("Folder path or s3:// URI", exact=True).fill(str(bad))
    page.get_by_label("Model name", exact=True).fill("broken")
    page.get_by_role("button", name="Start import").click()
    expect(page.locator("#import-result")).to_contain_text("started")
    failed = page.locator("#import-jobs tr", has_text="broken")
    expect(failed).to_contain_text("Failed", timeout=60_000)
    bullets = failed.locator("td.reasons li")
    assert bullets.count() >= 2, failed.text_content()
    assert failed.locator(".bar").count() == 0  # a red state, not a full green bar

    page.get_by_label("Folder path or s3:// URI", exact=True).fill(str(good))
    page.get_by_label("Model name", exact=True).fill("second")
    page.get_by_role("button", name="Start import").click()
    done = page.locator("#import-jobs tr", has_text="second")
    expect(done.locator("td").nth(3)).to_have_text("Completed", timeout=60_000)  # in words, not an empty bar
    expect(done.get_by_role("link", name="second")).to_be_visible()

    page.get_by_label("Folder path or s3:// URI", exact=True).fill(str(good))
    page.get_by_label("Model name", exact=True).fill("second")
    page.get_by_role("button", name="Start import").click()
    expect(page.locator("#import-result")).to_contain_text("Cannot start the import")  # the name is taken


def test_warm_and_delete_with_a_confirmation_from_the_model_page(
    page: Any, console_server: ConsoleServer
) -> None:
    sign_in(page, console_server, "model/second")
    expect(page.locator("#model-detail")).to_contain_text("second")

    page.get_by_role("button", name="Warm").click()
    expect(page.locator("#model-action-result")).to_contain_text("1 cop(ies) ready", timeout=120_000)
    expect(page.locator("#model-copies")).to_contain_text("Ready")

    page.get_by_role("button", name="Delete model…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete the imported model second?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe choice first
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Delete model…").click()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert api.get(f"{console_server.url}/outcrop/models/second").status_code == 200

    page.get_by_role("button", name="Delete model…").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete second").click()
    expect(page.locator("#model-action-result")).not_to_contain_text("failed")
    expect(page).to_have_url(re.compile(r"#overview$"), timeout=60_000)
    expect(page.locator("#models")).to_contain_text(console_server.model)
    expect(page.locator("#models")).not_to_contain_text("second")
    assert api.get(f"{console_server.url}/outcrop/models/second").status_code == 404


def test_an_admin_creates_rotates_and_deletes_a_key_and_sees_its_secret_once(
    page: Any, console_server: ConsoleServer
) -> None:
    sign_in(page, console_server, "keys")
    page.get_by_label("Name", exact=True).fill("app-one")
    page.get_by_label("Policy", exact=True).select_option("invoke-only")
    page.get_by_label("Only this model (invoke-only)", exact=True).select_option(console_server.model)
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret")
    expect(secret).to_be_visible()
    first = page.locator("#new-api-key").text_content()
    assert first
    expect(page.locator("#keys")).to_contain_text("app-one")
    created = api.get(f"{console_server.url}/v1/models", headers={"Authorization": f"Bearer {first}"})
    assert created.status_code == 200 and [m["id"] for m in created.json()["data"]] == [console_server.model]
    page.get_by_role("button", name="Done, hide it").click()
    expect(secret).to_be_hidden()
    assert page.locator("#new-api-key").text_content() == ""  # shown once

    page.get_by_role("button", name="Rotate app-one").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
    expect(secret).to_be_visible()
    second = page.locator("#new-api-key").text_content()
    assert second and second != first
    assert (
        api.get(f"{console_server.url}/v1/models", headers={"Authorization": f"Bearer {first}"}).status_code
        != 200
    )

    page.get_by_role("button", name="Delete app-one").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete app-one").click()
    expect(page.locator("#keys-result")).to_contain_text("Deleted app-one")
    expect(page.locator("#keys")).not_to_contain_text("app-one")


def test_a_batch_job_shows_its_progress_and_output_location_and_stops_from_the_console(
    page: Any, console_server: ConsoleServer
) -> None:
    root = console_server.server.import_root / "batch"
    records = [
        {"recordId": f"r{i}", "modelInput": {"prompt": f"Story {i}", "max_gen_len": 256}} for i in range(2000)
    ]
    root.mkdir()
    (root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    boto3_client("bedrock", console_server.url).create_model_invocation_job(
        jobName="long-batch",
        roleArn="arn:aws:iam::123456789012:role/Batch",
        modelId=console_server.model,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": str(root / "in.jsonl")}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(root / "out")}},
    )
    sign_in(page, console_server, "batches")
    row = page.locator("#batch-jobs tr", has_text="long-batch")
    expect(row).to_contain_text(str(root / "out"))  # where the results go
    expect(row.locator(".bar")).to_be_visible(timeout=60_000)  # record progress once the records are counted
    row.get_by_role("button", name="Stop").click()
    expect(page.locator("#batch-result")).to_contain_text("Stopping long-batch")
    expect(row).to_contain_text(re.compile("Stopping|Stopped"))
    expect(row.get_by_role("button", name="Stop")).to_have_count(0, timeout=60_000)


@pytest.mark.parametrize("width", [760, 1400])
def test_every_view_fits_the_window_without_horizontal_page_overflow(
    page: Any, console_server: ConsoleServer, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, console_server, "overview")
    for view in (
        "overview",
        "charts",
        "playground",
        "import",
        "batches",
        "keys",
        "audit",
        f"model/{console_server.model}",
    ):
        page.goto(f"{console_server.url}/console#{view}")
        expect(page.locator("#status")).to_contain_text("updated")
        if view == "import":
            expect(page.locator("#import-jobs")).to_contain_text("Failed")  # the long reasons wrap
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (view, overflow)


def test_the_keyboard_reaches_the_views_and_the_focus_is_visible(
    page: Any, console_server: ConsoleServer
) -> None:
    sign_in(page, console_server, "overview")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "#playground"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.keyboard.press("Enter")
    expect(page.locator("#view-playground")).to_be_visible()
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Playground")

    # The two-second refresh redraws the tables but leaves the focus where it was.
    page.goto(f"{console_server.url}/console#overview")
    link = page.locator("#models").get_by_role("link", name=console_server.model)
    link.focus()
    before = page.locator("#status").text_content()
    page.wait_for_function("(old) => document.getElementById('status').textContent !== old", arg=before)
    assert page.evaluate("document.activeElement.closest('#models') !== null")
    assert page.evaluate("document.activeElement.textContent") == console_server.model
