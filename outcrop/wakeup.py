"""Waking a runner's event loop from any thread (an API handler's worker thread, a callback)."""

from __future__ import annotations

import asyncio


def set_event(loop: asyncio.AbstractEventLoop | None, event: asyncio.Event | None) -> None:
    """Set ``event``, which belongs to ``loop``, from this thread or any other; a no-op before the
    runner has started or after its loop has closed."""
    if loop is None or event is None or loop.is_closed():
        return
    try:
        if asyncio.get_running_loop() is loop:
            event.set()
            return
    except RuntimeError:  # not on an event loop's thread
        pass
    loop.call_soon_threadsafe(event.set)
