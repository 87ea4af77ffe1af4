"""Shared by flows: load and validate the config once, hand tasks a plain dict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lift_core.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_flow_config(config: str, overrides: list[str] | None) -> dict[str, Any]:
    """Relative config paths resolve against the checkout, so workers started anywhere find them."""
    path = Path(config)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    cfg = load_config(path, overrides)
    # A relative run_root is anchored at the checkout: deployments and the CLI write to the same place.
    if "://" not in cfg.run_root and not os.path.isabs(cfg.run_root):
        cfg = load_config(path, [*(overrides or []), f"run_root={(REPO_ROOT / cfg.run_root).resolve()}"])
    return cfg.model_dump(mode="json")
