"""Reading a safetensors file's header without loading any tensor.

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (tensor name ->
dtype, shape, data_offsets), then the data buffer the offsets index. ``parse_header``
checks everything the header promises against the file (dtypes, offsets, overlaps, gaps,
truncation) and reports each problem as a sentence naming the file and the fix.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# safetensors dtype code -> (torch dtype name, bytes per element). Only these three are served.
SUPPORTED_DTYPES: dict[str, tuple[str, int]] = {
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
}
# Element sizes of the other codes the format defines, to check offsets of rejected tensors too.
OTHER_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}  # fmt: skip

# Listings of tensor names are cut here: enough to see the pattern, short enough to read.
MAX_LISTED = 10


@dataclass
class Tensor:
    file: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def listing(items: Iterable[str], limit: int = MAX_LISTED) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def parse_header(
    path: Path, rel: str, size: int, max_header_bytes: int
) -> tuple[dict[str, Tensor] | None, list[str]]:
    """Parse one safetensors header without reading tensor data; None if it cannot be parsed.

    Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data
    buffer that the header's ``data_offsets`` index (relative to its start).
    """
    problems: list[str] = []
    resave = "re-download or re-save it with save_pretrained(..., safe_serialization=True)"
    if size < 8:
        problems.append(f"{rel} is {size} bytes, too short to be a safetensors file; {resave}.")
        return None, problems
    limit = max_header_bytes
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len > limit:
                problems.append(
                    f"{rel} declares a {header_len}-byte header, over the {limit}-byte limit; the file is "
                    f"corrupt or not safetensors; {resave}."
                )
                return None, problems
            if 8 + header_len > size:
                problems.append(
                    f"{rel} declares a {header_len}-byte header but the file is only {size} bytes: it is "
                    f"truncated or corrupt; {resave}."
                )
                return None, problems
            raw = fh.read(header_len)
    except OSError as exc:
        problems.append(f"{rel} cannot be read ({exc.strerror}); check that it was copied completely.")
        return None, problems
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(
            f"{rel} has a header that is not UTF-8 (offset {exc.start}); the file is corrupt; {resave}."
        )
        return None, problems
    except (json.JSONDecodeError, RecursionError) as exc:
        problems.append(f"{rel} has a header that is not valid JSON ({exc}); the file is corrupt; {resave}.")
        return None, problems
    if not isinstance(header, dict):
        problems.append(
            f"{rel} has a header that is a JSON {type(header).__name__}, not an object; {resave}."
        )
        return None, problems

    tensors: dict[str, Tensor] = {}
    malformed: list[str] = []
    bad_dtypes: dict[str, list[str]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(dtype, str)
            and isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            malformed.append(name)
            continue
        numel = 1
        for dim in shape:
            numel *= dim
        element_bytes = (
            SUPPORTED_DTYPES[dtype][1] if dtype in SUPPORTED_DTYPES else OTHER_DTYPE_BYTES.get(dtype)
        )
        if dtype not in SUPPORTED_DTYPES:
            bad_dtypes.setdefault(dtype, []).append(name)
        nbytes = offsets[1] - offsets[0]
        if element_bytes is not None and numel * element_bytes != nbytes:
            malformed.append(
                f"{name} (shape {shape} x {dtype} needs {numel * element_bytes} bytes, offsets give {nbytes})"
            )
            continue
        spans.append((offsets[0], offsets[1], name))
        tensors[name] = Tensor(file=rel, dtype=dtype, shape=tuple(shape), nbytes=nbytes)
    ok = True
    if malformed:
        problems.append(
            f"{rel} has {len(malformed)} malformed tensor entr(ies) in its header: {listing(malformed)}; "
            f"the file is corrupt; {resave}."
        )
        ok = False
    for dtype, names in sorted(bad_dtypes.items()):
        problems.append(
            f"{rel} stores {len(names)} tensor(s) as {dtype} ({listing(names)}); Outcrop serves F32, F16 and "
            "BF16 weights only. Convert with `model.to(torch.bfloat16).save_pretrained(out_dir)` "
            "(or float16/float32)."
        )
    spans.sort()
    overlaps = [
        f"{a} and {b}" for (_, end_a, a), (start_b, _, b) in itertools.pairwise(spans) if start_b < end_a
    ]
    holes = sum(1 for (_, end_a, _a), (start_b, _, _b) in itertools.pairwise(spans) if start_b > end_a)
    if overlaps:
        problems.append(f"{rel} has overlapping tensors: {listing(overlaps)}; the file is corrupt; {resave}.")
    if holes or (spans and spans[0][0] != 0):
        problems.append(f"{rel} has gaps between its tensors' data; the file is corrupt; {resave}.")
    data_end = max((end for _, end, _ in spans), default=0)
    expected = 8 + header_len + data_end
    if size < expected:
        problems.append(
            f"{rel} is truncated: its header needs {expected} bytes but the file has {size}; {resave}."
        )
    elif size > expected and not malformed:
        problems.append(
            f"{rel} has {size - expected} bytes after its last tensor ({size} bytes, header says {expected}); "
            f"the file is corrupt; {resave}."
        )
    return (tensors if ok else None), problems
