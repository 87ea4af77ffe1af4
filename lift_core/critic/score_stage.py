"""Score stage: frames of HD-VILA + generated videos -> ``scores.parquet``, ``quarantine.parquet``.

``run_score`` follows docs/STAGES.md; ``score_manifests`` is the same work for any output path.
Both resume: what is already scored is skipped.

What is scored is each distinct (video, caption) of the manifests: every dimension's prompt holds the
caption, so a video listed with two captions gets two score rows, keyed (``video_id``, ``caption_id``,
``critic_id``); its frames are decoded and read once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, PipelineConfig
from lift_core.model_identity import critic_base_fingerprint
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, quarantine_row, rows_to_table

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
NO_FRAMES = "no decoded frames for this video (see the decode stage's quarantine for why)"


def score_manifests(
    cfg: PipelineConfig,
    manifest_uris: list[str],
    frames_uris: list[str],
    adapter_uri: str,
    scores_uri: str,
    *,
    model: str | None = None,
    rationale: bool | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Score every selected (video, caption) of the manifests whose video has frames into ``scores_uri`` (resumable).

    Returns ``counts`` (``videos``: distinct videos; ``pairs``: distinct (video, caption) rows, which
    ``scored``, ``resumed`` and ``quarantined`` count), the ``critic_id`` and the quarantine rows (one
    per pair whose video has no usable frames).
    """
    from lift_core.critic.backbone import critic_id
    from lift_core.critic.scoring import adapter_base_model, local_copy
    from lift_core.distributed import scoring_pool as pool
    from lift_core.video.decode_stage import missing_frames_reasons

    progress = resolve(progress)
    adapter_local = local_copy(adapter_uri)
    model = model or adapter_base_model(adapter_local)
    cid = critic_id(model, adapter_local)
    want_reasons = cfg.score.rationale if rationale is None else bool(rationale)

    manifest = pool.read_manifests(manifest_uris, cfg.score.sources)
    frames_ids = pool.frames_video_ids(frames_uris)
    done = pool.scored_keys(scores_uri, cid, need_reasons=want_reasons)
    todo, missing = pool.plan(manifest, frames_ids, done)
    # Videos without frames: each needs its decode quarantine row, else the frames lost it (an error).
    missing_why = missing_frames_reasons(frames_uris, missing) or {}
    keys = list(zip(*(manifest.column(c).to_pylist() for c in pool.SCORED)))
    resumed = sum(1 for k in keys if k in done and k[0] in frames_ids)
    n_videos = len({k[0] for k in keys})
    progress(0.0, f"{manifest.num_rows} (video, caption) pairs of {n_videos} videos: {resumed} already scored, "
                  f"{todo.num_rows} to score, {len(missing)} without frames")
    written, unusable = pool.score_to_shards(
        cfg, frames_uris, todo, adapter_uri=adapter_local, scores_uri=scores_uri, model=model,
        rationale=want_reasons, progress=progress,
    )
    total = pool.compact_scores(scores_uri)
    progress(1.0, f"{total} score rows in {scores_uri}")
    quarantine = [quarantine_row(r["uri"], "score", missing_why.get(r["video_id"], NO_FRAMES), r["video_id"])
                  for r in missing] + unusable
    return {
        "critic_id": cid,
        "counts": {"videos": n_videos, "pairs": manifest.num_rows, "scored": written, "resumed": resumed,
                   "quarantined": len(quarantine), "rows": total},
        "quarantine": quarantine,
    }


def stage_out(cfg: PipelineConfig, manifest_uris: list[str], frames_uris: list[str], adapter_uri: str) -> tuple[str, str]:
    """(key, output dir) of the score stage: inputs' content, ``score``, the critic's labels, base model's
    content, frame size, code."""
    upstream = [storage.fingerprint_uri(u) for u in [*manifest_uris, *frames_uris, adapter_uri]]
    extra = {
        "label_values": cfg.critic.label_values,
        "backbone": cfg.critic.backbone,
        "frame_size": [cfg.decode.height, cfg.decode.width],
    }
    # The base run_score loads (critic.model, whatever the adapter records), by content.
    extra["base"] = critic_base_fingerprint(cfg)
    key = storage.stage_key("score", upstream, cfg.score.fingerprint(), extra)
    return key, storage.stage_dir(cfg.run_root, "score", key)


def run_score(
    cfg: PipelineConfig,
    manifest_uris: list[str],
    frames_uris: list[str],
    adapter_uri: str,
    progress: ProgressFn | None = None,
) -> storage.StageResult:
    """The ``score`` stage: outputs ``scores`` and ``quarantine``; metrics summarise the rewards."""
    from lift_core.critic.builder import ensure_critic_base

    key, out = stage_out(cfg, manifest_uris, frames_uris, adapter_uri)
    if done := storage.load_success(out):
        return done
    model = ensure_critic_base(cfg)
    outputs = {"scores": storage.join(out, "scores.parquet"), "quarantine": storage.join(out, "quarantine.parquet")}
    res = score_manifests(cfg, manifest_uris, frames_uris, adapter_uri, outputs["scores"], model=model,
                          progress=progress)
    storage.write_table(outputs["quarantine"], rows_to_table(res["quarantine"], QUARANTINE_SCHEMA))
    metrics = {"critic_id": res["critic_id"], **reward_summary(outputs["scores"])}
    return storage.mark_success(storage.StageResult("score", key, out, outputs, res["counts"], metrics))


def reward_summary(scores_uri: str) -> dict[str, Any]:
    """Reward distribution per source and dimension: one table row each (the Prefect table artifact).

    Dimensions are ``semantic``, ``fidelity``, ``motion``, then ``overall`` (``reward``) and
    ``lift`` (``reward_lift``, LiFT's discrete mapping). Only the numeric columns are read.
    """
    fs, path = storage.fs_and_path(scores_uri)
    cols = ["source", "reward", "reward_lift", *[f"{c}_{d}" for d in DIMENSIONS for c in ("reward", "label")]]
    t = pq.read_table(path, filesystem=fs, columns=cols)
    sources = np.array(t.column("source").to_pylist(), dtype=object)
    rows: list[dict[str, Any]] = []
    for src in sorted({str(s) for s in sources}):
        mask = sources == src
        for dim, rcol, lcol in [
            *[(d, f"reward_{d}", f"label_{d}") for d in DIMENSIONS],
            ("overall", "reward", None),
            ("lift", "reward_lift", None),
        ]:
            vals = np.asarray(t.column(rcol).to_numpy(zero_copy_only=False), dtype=np.float64)[mask]
            row: dict[str, Any] = {"source": src, "dimension": dim, "n": int(vals.size)}
            row.update(_distribution(vals))
            if lcol is not None:
                labels = np.array(t.column(lcol).to_pylist(), dtype=object)[mask]
                row.update({f"n_{label.lower()}": int((labels == label).sum()) for label in LABELS})
            rows.append(row)
    return {"n_scored": t.num_rows, "reward_summary": rows}


def _distribution(vals: np.ndarray) -> dict[str, float | None]:
    if vals.size == 0:
        return {"mean": None, "std": None, **{f"p{int(q * 100):02d}": None for q in QUANTILES}}
    qs = np.quantile(vals, QUANTILES)
    return {
        "mean": round(float(vals.mean()), 6),
        "std": round(float(vals.std()), 6),
        **{f"p{int(q * 100):02d}": round(float(v), 6) for q, v in zip(QUANTILES, qs)},
    }


__all__ = ["run_score", "score_manifests", "reward_summary", "pa"]
