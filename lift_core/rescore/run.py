"""One rescoring run: discover new generations, score them, append to the store, summarise.

``run_rescore`` is what the ``rescore-generations`` flow and ``lift rescore`` call. It is
incremental (only videos without a score are scored), idempotent (a rerun after a crash scores the
rest, each video once) and safe to start twice at once: every batch is one MERGE into the store's
Delta table, which inserts only keys not stored yet (delta-rs's commit conflicts settle races), and
before each batch a run drops the videos that another run settled meanwhile. Runs started together
score their videos in different orders (by a hash of run id and video id), so they mostly split the
work instead of duplicating it.

Which videos are scored:

- default: videos with no score in the store yet, under any critic (new generations);
- ``rescore_all``: every video without a score under the *current* critic, so a new critic rescores
  the whole history; old critics' scores stay in the store, each row keyed by its ``critic_id``.

A generated video is scored once per critic, with its own caption (copies of its content without a
caption of their own borrow one); each score row carries that caption's ``caption_id``, the store's
key being (``video_id``, ``caption_id``, ``critic_id``) as in the scores contract.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.data.inputs import InputLimits
from lift_core.progress import ProgressFn, resolve
from lift_core.rescore import discovery
from lift_core.rescore.critic_ref import CriticRef, resolve_critic
from lift_core.rescore.store import SETTLED_QUARANTINE_STAGE, ScoresStore, new_run_id, utcnow
from lift_core.rescore.trend import batch_stats, plot_trend, store_trend
from lift_core.schemas import quarantine_row

log = logging.getLogger("lift.rescore")

ScorerFactory = Callable[[CriticRef], Any]  # returns an object with ``score_rows(meta, frames)``


@dataclass
class RescoreReport:
    run_id: str
    store: str
    critic_id: str
    adapter: str
    mode: str  # "new" or "rescore-all"
    counts: dict[str, int]
    batch_stats: list[dict[str, Any]]  # per dimension, over this run's scored videos
    mean_reward: float | None  # mean ``reward`` of this run's scored videos
    alert: str | None  # why the batch is below ``rescore.min_mean_reward``, else None
    outputs: dict[str, Any] = field(default_factory=dict)  # trend_png, summary, versions, store_version
    trend: list[dict[str, Any]] = field(default_factory=list)  # daily means over the whole store
    started_at: str = ""
    finished_at: str = ""
    warnings: list[str] = field(default_factory=list)  # e.g. a watched folder that does not exist yet

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_scorer_factory(cfg: PipelineConfig) -> ScorerFactory:
    def make(ref: CriticRef):
        from lift_core.critic.scoring import CriticScorer

        return CriticScorer(ref.adapter, model=ref.model, critic=cfg.critic, score=cfg.score,
                            frame_size=(cfg.decode.height, cfg.decode.width), rationale=cfg.rescore.rationale)

    return make


def _decode(cfg: PipelineConfig, f: discovery.VideoFile):
    from lift_core.video.io import VideoDecodeError, read_video

    try:
        return read_video(f.uri, cfg.decode.frames, cfg.decode.height, cfg.decode.width, backend=cfg.decode.backend)
    except VideoDecodeError as err:
        return err


def score_batch(
    cfg: PipelineConfig, scorer: Any, files: Sequence[discovery.VideoFile], pool: ThreadPoolExecutor
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Decode (in threads) and score one batch: score rows, and quarantine rows for undecodable videos."""
    decoded = list(pool.map(lambda f: _decode(cfg, f), files))
    meta, frames, bad = [], [], []
    for f, d in zip(files, decoded):
        if isinstance(d, Exception):
            bad.append(quarantine_row(f.uri, SETTLED_QUARANTINE_STAGE, d, f.video_id))
            continue
        meta.append({"video_id": f.video_id, "uri": f.uri, "caption": f.caption, "source": cfg.rescore.source})
        frames.append(d.frames)
    rows = scorer.score_rows(meta, frames) if meta else []
    by_id = {f.video_id: f for f in files}
    for r in rows:
        r["generated_at"] = by_id[r["video_id"]].modified
    return rows, bad


def run_rescore(
    cfg: PipelineConfig,
    generations: Sequence[str] | None = None,
    critic: str | None = None,
    store: str | None = None,
    rescore_all: bool = False,
    progress: ProgressFn | None = None,
    scorer_factory: ScorerFactory | None = None,
) -> RescoreReport:
    """Score the videos under ``generations`` (default ``cfg.rescore.generations``) not yet in the store.

    The locations named in ``generations`` must exist. The watched ones of ``rescore.generations`` may
    not exist yet (a schedule can start before the first generation does): such a location has nothing
    to score, and the report says so in ``warnings``.
    """
    progress = resolve(progress)
    rc = cfg.rescore
    watched = not generations
    uris = list(generations or rc.generations)
    if not uris:
        raise ValueError("no generations to watch: pass --generations or set rescore.generations")
    st = ScoresStore(store or rc.store, retries=rc.commit_retries)  # its first read migrates an old Parquet store
    run_id, started = new_run_id(), utcnow()
    ref = resolve_critic(cfg, critic)
    progress(0.0, f"critic {ref.critic_id} ({ref.adapter}); listing {len(uris)} location(s)")

    limits = InputLimits.from_config(cfg.data)  # the same data.* bounds as every other command
    listing = discovery.list_videos(uris, missing_ok=watched, limits=limits)
    warnings = [f"watched location {u} does not exist (yet): nothing to score there" for u in listing.missing]
    for w in warnings:
        log.warning("rescore: %s", w)
    files, new_index, unreadable = discovery.assign_video_ids(listing.files, st.read_index(), rc.hash_workers,
                                                              hasher=limits.video_content_id)
    st.append_index(new_index, run_id)
    files, copies = discovery.unique_by_content(files)
    n_copies = sum(len(c) for c in copies.values())
    counts = {"listed": len(listing.files), "copies": n_copies, "hashed": len(new_index)}
    progress(0.05, f"{len(listing.files)} videos listed, {len(new_index)} hashed, {n_copies} copies")

    pairs = st.scored_pairs()
    seen_version = st.version()
    scored_any = {vid for vid, _ in pairs}
    done_here = {vid for vid, cid in pairs if cid == ref.critic_id}
    pending = [f for f in files if f.video_id not in done_here]
    todo = pending if rescore_all else [f for f in pending if f.video_id not in scored_any]
    todo, no_caption = discovery.attach_captions(todo, copies, limits)
    todo.sort(key=lambda f: hashlib.sha256(f"{run_id}/{f.video_id}".encode()).digest())
    counts.update({"already_done": len(files) - len(pending),
                   "pending_for_critic": len(pending), "new": len(todo) + len(no_caption)})
    problems = _new_problems(st, [*listing.quarantine, *unreadable, *no_caption], ref.critic_id)
    st.append_quarantine(problems, run_id, 0)
    progress(0.1, f"{len(todo)} to score ({'rescore-all' if rescore_all else 'new videos'}), "
                  f"{len(problems)} unusable inputs quarantined")

    scored_rows, quarantined, versions, stored, taken = [], list(problems), [], 0, 0
    if todo:
        scorer = (scorer_factory or default_scorer_factory(cfg))(ref)
        if getattr(scorer, "critic_id", ref.critic_id) != ref.critic_id:
            raise RuntimeError(f"the loaded critic is {scorer.critic_id}, expected {ref.critic_id}")
        step = max(1, rc.batch_size)
        queue, done, seq = list(todo), 0, 0
        with ThreadPoolExecutor(max(1, rc.decode_workers)) as pool:
            while queue:
                version = st.version()
                if version != seen_version:  # another run committed: skip what it settled for this critic
                    settled = {vid for vid, cid in st.scored_pairs() if cid == ref.critic_id}
                    kept = [f for f in queue if f.video_id not in settled]
                    taken += len(queue) - len(kept)
                    queue, seen_version = kept, version
                    if not queue:
                        break
                batch, queue, seq = queue[:step], queue[step:], seq + 1
                rows, bad = score_batch(cfg, scorer, batch, pool)
                st.append_quarantine([{**q, "critic_id": ref.critic_id} for q in bad], run_id, seq)
                merged = st.append_scores(rows, run_id, seq)  # one commit per batch = the unit of resume
                if merged:
                    versions.append(merged["version"])
                    stored += merged["inserted"]
                    seen_version = merged["version"] if merged["version"] == (seen_version or 0) + 1 else seen_version
                scored_rows += rows
                quarantined += bad
                done += len(batch)
                progress(0.1 + 0.8 * done / len(todo), f"scored {done}/{len(todo)}")

    # quarantined: rows added to the quarantine table now; unusable: every input this run could not use
    # (a file without a caption stays unusable, but is quarantined once).
    # stored: rows this run's MERGEs inserted (a key another run stored first is not stored twice);
    # settled_by_other_run: videos another run scored while this one was working.
    counts.update({"scored": len(scored_rows), "stored": stored, "settled_by_other_run": taken,
                   "quarantined": len(quarantined),
                   "unusable": len(listing.quarantine) + len(unreadable) + len(no_caption)
                   + len(quarantined) - len(problems)})
    stats = batch_stats(scored_rows)
    mean = next(s["mean"] for s in stats if s["dimension"] == "overall")
    alert = None
    if rc.min_mean_reward is not None and mean is not None and mean < rc.min_mean_reward:
        alert = (f"mean reward {mean:.4f} of the {len(scored_rows)} new videos is below "
                 f"rescore.min_mean_reward={rc.min_mean_reward:g} (critic {ref.critic_id})")

    outputs: dict[str, Any] = {"store": st.uri, "scores_table": st.scores_uri, "versions": versions}
    if st.migration:
        outputs["migrated"] = st.migration
    maintenance = st.maintain(rc.compact_min_files, rc.vacuum_retention_hours)
    if maintenance:
        outputs["maintenance"] = maintenance
    outputs["store_version"] = st.version()
    # The trend reads the scores table at the version it names (not a later writer's).
    trend = store_trend(st, version=outputs["store_version"])
    if trend:
        png = plot_trend(trend, ref.critic_id, rc.min_mean_reward, version=outputs["store_version"])
        storage.write_bytes_atomic(st.trend_uri, png)
        outputs["trend_png"] = st.trend_uri
    report = RescoreReport(
        run_id=run_id, store=st.uri, critic_id=ref.critic_id, adapter=ref.adapter,
        mode="rescore-all" if rescore_all else "new", counts=counts, batch_stats=stats, mean_reward=mean,
        alert=alert, outputs=outputs, trend=trend, started_at=started.isoformat(), finished_at=utcnow().isoformat(),
        warnings=warnings,
    )
    # The run's own record (the trend is the whole store's, redrawn each run: not kept per run).
    outputs["summary"] = st.write_run_summary(run_id, {k: v for k, v in report.to_dict().items() if k != "trend"})
    progress(1.0, f"scored {len(scored_rows)}, quarantined {len(quarantined)}"
                  + (f"; ALERT: {alert}" if alert else ""))
    return report


def _new_problems(st: ScoresStore, rows: Sequence[dict[str, Any]], critic_id: str) -> list[dict[str, Any]]:
    """Discovery problems not yet recorded: a file without a caption is quarantined once, not every hour."""
    if not rows:
        return []
    known = st.read_quarantine(["uri", "video_id", "error"])
    seen = set(zip(*(known.column(c).to_pylist() for c in ("uri", "video_id", "error"))))
    out, fresh = [], set()
    for r in rows:
        key = (r["uri"], r.get("video_id"), r["error"])
        if key not in seen and key not in fresh:
            fresh.add(key)
            out.append({**r, "critic_id": critic_id})
    return out
