"""The benchmark convention every script in ``benchmarks/`` follows (DESIGN.md).

A result is ``{"name", "machine", "figures", "ratio", "ratio_means", "command"}``, written as
``<out-dir>/<name>.json`` plus a Markdown table ``<out-dir>/<name>.md``, and printed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPU count and the first GPU's name (None without CUDA)."""
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # a benchmark without torch still reports its machine
        pass
    return {"cpus": os.cpu_count(), "gpu": gpu}


def command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def publish(out_dir: str | Path, result: dict[str, Any], markdown: str) -> dict[str, Any]:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir``, print the JSON, return ``result``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result['name']}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{result['name']}.md").write_text(markdown)
    print(json.dumps(result, indent=2))
    return result
