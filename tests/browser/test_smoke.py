"""The console in a real Chromium: signing in with a #key= link keeps the key out of the address bar."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import ConsoleServer


def test_the_console_signs_in_from_a_key_link_and_drops_the_key_from_the_url(
    console_server: ConsoleServer, page: Any
) -> None:
    key = console_server.admin_key
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(console_server.console_url(key))
    page.wait_for_function("() => !location.hash")
    assert "#key=" not in page.url and key not in page.url
    assert page.evaluate("() => sessionStorage.getItem('outcrop-key')") == key
    # The page shows data only that key may see: the imported model appears.
    page.wait_for_function(f"() => document.body.innerText.includes({console_server.model!r})")
    assert "Outcrop" in page.title()
    assert not any(key in url for url in requests)  # never sent in a URL
