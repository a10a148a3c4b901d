"""Python handler modules run in their own worker process: broken handlers fail only their calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from outcrop.config import SageMakerConfig
from outcrop.errors import InvalidRequestError, ModelFailedError
from outcrop.sagemaker.handlers import HandlerPool

pytestmark = pytest.mark.anyio

HANDLERS = {
    "qa": (
        "def input_fn(payload, content_type):\n"
        "    print('noise that must not reach the protocol')\n"
        "    return {'inputs': f\"Q: {payload['q']} ({content_type})\"}\n"
        "def output_fn(response, accept):\n"
        "    return {'answer': response[0]['generated_text']}\n"
    ),
    "only_input": "def input_fn(payload, content_type):\n    return {'inputs': 'x'}\n",
    "raises": "def input_fn(payload, content_type):\n    raise ValueError('bad payload shape')\n",
    "loops": "def input_fn(payload, content_type):\n    while True:\n        pass\n",
    "hog": "def input_fn(payload, content_type):\n    return len(bytearray(8 * 1024**3))\n",
    "broken_import": "import no_such_module_anywhere\n",
}


@pytest.fixture
def pool(tmp_path: Path) -> HandlerPool:
    folder = tmp_path / "handlers"
    folder.mkdir()
    for name, source in HANDLERS.items():
        (folder / f"{name}.py").write_text(source)
    settings = SageMakerConfig(
        handlers_dir=folder, handler_timeout_seconds=2, handler_memory_bytes=512 * 1024 * 1024
    )
    return HandlerPool(settings, tmp_path / "logs")


async def test_a_handler_maps_input_and_output_and_its_prints_go_to_the_log(pool: HandlerPool) -> None:
    try:
        assert await pool.call("qa", "input_fn", {"q": "why"}, "application/json") == {
            "inputs": "Q: why (application/json)"
        }
        assert await pool.call("qa", "output_fn", [{"generated_text": "because"}], "application/json") == {
            "answer": "because"
        }
        assert await pool.call("only_input", "output_fn", [1, 2], "*/*") == [1, 2]  # absent: passes through
    finally:
        await pool.stop()


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("raises", "raised ValueError: bad payload shape"),
        ("loops", "did not return within 2 s and was stopped"),
        ("hog", "MemoryError"),
        ("broken_import", "ModuleNotFoundError"),
    ],
)
async def test_a_broken_handler_fails_its_call_with_a_model_error_and_serves_again(
    pool: HandlerPool, module: str, message: str
) -> None:
    try:
        for _ in range(2):  # the second call gets a working (or freshly started) worker
            with pytest.raises(ModelFailedError, match=message):
                await pool.call(module, "input_fn", {}, "application/json")
        assert await pool.call("qa", "input_fn", {"q": "still"}, "text/plain") == {
            "inputs": "Q: still (text/plain)"
        }
    finally:
        await pool.stop()


async def test_only_modules_in_the_operators_folder_can_be_named(pool: HandlerPool, tmp_path: Path) -> None:
    for name, message in (
        ("../qa", "not a module name"),
        ("nope", "there is no nope.py"),
        ("os", "no os.py"),
    ):
        with pytest.raises(InvalidRequestError, match=message):
            await pool.call(name, "input_fn", {}, "application/json")
    off = HandlerPool(SageMakerConfig(), tmp_path / "logs")
    with pytest.raises(InvalidRequestError, match="handler modules are off"):
        await off.call("qa", "input_fn", {}, "application/json")
