"""The process a Python handler module runs in: ``python -m outcrop.sagemaker.handler_worker``.

It loads one module from the operator's handler folder, limits its own address space
(RLIMIT_AS), and answers calls on stdin/stdout, one JSON line each::

    -> {"fn": "input_fn", "args": [payload, content_type]}
    <- {"ok": result} | {"error": "ValueError: ..."}

A handler that raises fails only its request; one that exhausts memory answers MemoryError and the
worker exits (the gateway starts a fresh one); one that loops is killed by the gateway's timeout.
Whatever the handler prints goes to stderr (the worker's log), never into the protocol.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any


def _load(folder: Path, name: str) -> Any:
    path = folder / f"{name}.py"
    sys.path.insert(0, str(folder))  # a handler may import its own helpers from the same folder
    spec = importlib.util.spec_from_file_location(f"outcrop_handler_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--module", required=True)
    p.add_argument("--memory-bytes", type=int, required=True)
    args = p.parse_args()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the handler's prints go to the log, not into the protocol
    sys.stdout = sys.stderr
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    try:
        module = _load(args.folder, args.module)
        functions = {fn: getattr(module, fn, None) for fn in ("input_fn", "output_fn")}
    except BaseException as exc:  # report a broken module on the first call, then exit
        broken = f"loading handler module '{args.module}' failed: {type(exc).__name__}: {exc}"
        traceback.print_exc()
        for _ in sys.stdin:
            protocol.write(json.dumps({"error": broken}) + "\n")
            protocol.flush()
        return
    for line in sys.stdin:
        call = json.loads(line)
        fn = functions.get(call.get("fn"))
        try:
            result = call["args"][0] if fn is None else fn(*call["args"])  # absent = pass through
            out = json.dumps({"ok": result})
        except MemoryError:
            protocol.write(json.dumps({"error": "MemoryError: the handler exceeded its memory limit"}) + "\n")
            protocol.flush()
            sys.exit(3)  # the heap may be in any state: let the gateway start a clean worker
        except Exception as exc:
            traceback.print_exc()
            out = json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]})
        protocol.write(out + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
