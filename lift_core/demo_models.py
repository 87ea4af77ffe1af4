"""``lift build-demo-models``: pre-train the demo's two bases and ship them in the catalog.

The demo's users, like real LiFT users, start from pre-trained bases and never pre-train anything.
This builds them once, from a config's build settings (``configs/demo.yaml``: ``critic.build_tiny``
and ``critic.pretrain``; ``t2v.build_tiny`` and ``t2v.pretrain``), through the one training loop:

- ``lift-demo-vlm``: a tiny Qwen2-VL pre-trained on generic video-text supervision of the synthetic
  world (``lift_core.critic.pretrain``);
- ``lift-demo-t2v``: a tiny CogVideoX (VAE, then denoiser on noisy captions; ``lift_core.t2v.pretrain``).

Each pre-training run lives in its stage folder under ``run_root``, so an interrupted build resumes.
The finished models are copied to ``<catalog dir>/models/<name>`` and declared in the catalog's
``models`` section with every file's sha256 and the build record (``lift_core.shipped``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from lift_core import shipped
from lift_core.config import PipelineConfig

log = logging.getLogger("lift.models")

MODELS = {"lift-demo-vlm": "critic", "lift-demo-t2v": "t2v"}
# The catalog's models section is written after this line; everything above it is kept as written.
MARKER = "# --- models: written by `lift build-demo-models` (lift_core.demo_models); do not edit below ---"


def _steps_and_seeds(cfg: PipelineConfig, kind: str) -> tuple[dict[str, int], dict[str, int]]:
    if kind == "critic":
        p = cfg.critic.pretrain
        return {"pretrain": p.train.max_steps}, {"build": cfg.critic.build_tiny.seed, "pretrain": p.train.seed}
    p = cfg.t2v.pretrain
    return ({"vae": p.vae.max_steps, "denoiser": p.denoiser.max_steps},
            {"build": cfg.t2v.build_tiny.seed, "vae": p.vae.seed, "denoiser": p.denoiser.seed})


def check_build_settings(cfg: PipelineConfig) -> None:
    missing = [k for k, v in (("critic.build_tiny", cfg.critic.build_tiny), ("critic.pretrain", cfg.critic.pretrain),
                              ("t2v.build_tiny", cfg.t2v.build_tiny), ("t2v.pretrain", cfg.t2v.pretrain),
                              ("data.synthetic", cfg.data.synthetic)) if v is None]
    if missing:
        raise ValueError(f"build-demo-models needs {', '.join(missing)} in the config (configs/demo.yaml has them)")


def wanted_records(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Per shipped model: the build settings (``config``) and recipe fingerprint the code asks for."""
    from lift_core.critic import builder as critic_builder
    from lift_core.t2v import builder as t2v_builder

    return {
        "lift-demo-vlm": {"config": critic_builder.build_record(cfg),
                          "recipe_fingerprint": critic_builder.recipe_fingerprint()},
        "lift-demo-t2v": {"config": t2v_builder.build_record(cfg.t2v.build_tiny, cfg.t2v, cfg.data.split),
                          "recipe_fingerprint": t2v_builder.recipe_fingerprint()},
    }


def _build_one(cfg: PipelineConfig, kind: str, out_dir: str, progress: Any = None) -> dict[str, Any]:
    """Build into ``out_dir``; returns the model's pre-training figures."""
    if kind == "critic":
        from lift_core.critic.builder import build_pretrained_tiny_critic

        record = build_pretrained_tiny_critic(out_dir, cfg, progress)
        return {"parameters": record["parameters"], **record["pretrain_figures"]}
    from lift_core.t2v.builder import build_pretrained_tiny_t2v, built_record

    build_pretrained_tiny_t2v(out_dir, cfg, progress)
    return built_record(out_dir)["pretrain_figures"]


def write_catalog_models(catalog: str | Path, entries: dict[str, dict[str, Any]]) -> None:
    """Replace the catalog's ``models`` section (after ``MARKER``), keeping the rest of the file."""
    path = shipped.catalog_path(catalog)
    text = path.read_text()
    head = text.split(MARKER)[0].rstrip() + "\n\n"
    body = yaml.safe_dump({"models": entries}, sort_keys=False, width=120)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(head + MARKER + "\n" + body)
    os.replace(tmp, path)


def build_demo_models(cfg: PipelineConfig, only: list[str] | None = None,
                      on_built: Callable[[str, dict[str, Any]], None] | None = None,
                      progress: Any = None) -> dict[str, dict[str, Any]]:
    """Build the shipped models named in ``only`` (default: both), copy them next to the catalog and
    declare them there; returns the catalog entries written."""
    import torch

    check_build_settings(cfg)
    names = only or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown demo model(s) {unknown}; known: {list(MODELS)}")
    catalog = shipped.catalog_path(cfg.data.catalog)
    entries: dict[str, dict[str, Any]] = {}
    wanted = wanted_records(cfg)
    for name in names:
        kind = MODELS[name]
        start = time.time()
        staging = os.path.join(os.path.abspath(cfg.run_root), "build-demo-models", name)
        if os.path.exists(staging):
            shutil.rmtree(staging)
        log.info("building %s (%s base)", name, kind)
        figures = _build_one(cfg, kind, staging, progress)
        dest = catalog.parent / "models" / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(staging, dest)
        steps, seeds = _steps_and_seeds(cfg, kind)
        figures = {k: v for k, v in figures.items() if k != "stage_dir"}  # a local path of the builder's machine
        record = {
            **wanted[name],
            "steps": steps,
            "seeds": seeds,
            # The wall time of this invocation: a resumed build reports only what it ran.
            "wall_time_s": round(time.time() - start, 1),
            "machine": {"cpus": os.cpu_count(), "torch": str(torch.__version__), "python": platform.python_version(),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "figures": figures,
        }
        record = json.loads(json.dumps(record, default=str))  # plain YAML types only
        # Re-read: a build of the other model may have finished meanwhile (`--only`, in parallel).
        entries = {n: {k: v for k, v in vars(e).items() if k != "name"} for n, e in _existing(catalog).items()}
        entries[name] = {"path": f"models/{name}", "kind": kind, "files": shipped.dir_files(str(dest)),
                         "record": record}
        write_catalog_models(catalog, entries)
        log.info("%s: %d files, %.1f MB, built in %.0f s", name, len(entries[name]["files"]),
                 sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 1e6, record["wall_time_s"])
        if on_built is not None:
            on_built(name, entries[name])
    return {n: entries[n] for n in names}


def _existing(catalog: Path) -> dict[str, shipped.ModelEntry]:
    try:
        found = shipped.load_entries(catalog)
    except shipped.ShippedModelError:
        return {}
    for e in found.values():  # store paths relative to the catalog again
        object.__setattr__(e, "path", f"models/{Path(e.path).name}")
    return found


__all__ = ["MARKER", "MODELS", "build_demo_models", "check_build_settings", "wanted_records", "write_catalog_models"]
