"""One part of the GPU check, run in this process: `python -m bench.perf.gpu_child MODULE:FUNCTION
SIZE WORKDIR OUT.json`.

bench.perf.gpu_check starts one such process per part (its own CUDA context, peak counters and
time limit). The part's result, or its error, is written to OUT.json; the process exits 0 either
way, so a missing file means the process itself died (killed, or crashed in native code). Imports
nothing heavy itself: the part's module brings torch.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import traceback
from pathlib import Path

from bench.perf.gpu_sizes import Sizes, sizes


def call(spec: str, sz: Sizes, workdir: Path) -> dict:
    """Run the part `spec` ("module:function") at sizes `sz` in this process."""
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)(sz, workdir)


def failure(exc: BaseException) -> dict:
    """A part's error as the check records it: one line, and the traceback."""
    return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0], "traceback": traceback.format_exc()}


def _jsonable(x):
    """JSON for values besides plain numbers and strings (numpy and torch scalars)."""
    return x.item() if hasattr(x, "item") else str(x)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec, size, workdir, out = argv
    try:
        result = call(spec, sizes(size), Path(workdir))
    except Exception as exc:  # recorded, so the check says what went wrong
        result = failure(exc)
    Path(out).write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
