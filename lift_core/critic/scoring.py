"""Batched critic scoring: calibrated continuous rewards from the critic's label-token probabilities.

LiFT asks the critic its three questions one video at a time, decoding the video once per question
and sampling a full ``Label. reason`` answer each time. Here a video is decoded once (the frames
come from the decode stage), and the three questions of many videos go through one left-padded
forward pass. The reward is read from the next-token distribution at the first answer position:

- ``p_d``: softmax over the logits of the three label tokens (``Good``, ``Normal``, ``Bad``);
- ``label_d``: the most probable of them;
- ``reward_d = sum_l p_d(l) * value(l)`` with ``value`` from ``critic.label_values``;
- ``reward``: the mean of ``reward_d``; ``reward_lift``: LiFT's discrete mapping of the labels.

Rationales are optional: one batched greedy ``generate`` whose first token is restricted to the
label tokens, so ``reason_d`` always explains the reported ``label_d``.

What a score depends on: every dimension's prompt is the caption followed by that dimension's question
(LiFT's fixed format, and the one the critic was trained on), so fidelity and motion are asked with
the caption too. All three scores are therefore computed per (video, caption), and a score row is
keyed by (``video_id``, ``caption_id``, ``critic_id``). A video is decoded once; each of its captions
is a row of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, CriticConfig, DecodeConfig, ScoreConfig
from lift_core.critic.prompts import format_answer, parse_answer
from lift_core.schemas import SCORES_SCHEMA, caption_id

PROB_COLUMNS: dict[str, str] = {"Good": "p_good", "Normal": "p_normal", "Bad": "p_bad"}
META_COLUMNS: tuple[str, ...] = ("uri", "caption", "source")
# What the Ray Data actors emit: score rows, plus rows with only ``error`` set for unusable frames.
SCORES_WITH_ERROR_SCHEMA = SCORES_SCHEMA.append(pa.field("error", pa.string()))


# --------------------------------------------------------------------------- reward arithmetic
@dataclass(frozen=True)
class RewardMapping:
    """Label values for the continuous reward and LiFT's discrete values (Good 0.9, Normal 0.2, Bad 0.05)."""

    label_values: Mapping[str, float]
    lift_values: Mapping[str, float]

    def __post_init__(self) -> None:
        for name, values in (("critic.label_values", self.label_values), ("score.lift_values", self.lift_values)):
            if set(values) != set(LABELS):
                raise ValueError(f"{name} must give a value for exactly {list(LABELS)}, got {sorted(values)}")

    @classmethod
    def from_config(cls, critic: CriticConfig, score: ScoreConfig) -> "RewardMapping":
        return cls(dict(critic.label_values), dict(score.lift_values))

    def value_vector(self) -> np.ndarray:
        return np.array([float(self.label_values[label]) for label in LABELS], dtype=np.float64)


def label_probabilities(last_logits: Any, label_token_ids: Sequence[int]) -> np.ndarray:
    """``[N, 3]`` probabilities of (Good, Normal, Bad), renormalised over the three label tokens."""
    import torch

    picked = last_logits[:, list(label_token_ids)].float()
    return torch.softmax(picked, dim=-1).cpu().numpy().astype(np.float64)


def dimension_rewards(probs: np.ndarray, mapping: RewardMapping) -> tuple[list[str], np.ndarray]:
    """Argmax labels and expected rewards ``sum p * value`` for ``[N, 3]`` probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = [LABELS[i] for i in probs.argmax(axis=1)]
    return labels, probs @ mapping.value_vector()


def lift_reward(labels: Iterable[str], mapping: RewardMapping) -> float:
    """LiFT's reward: the mean of the discrete per-dimension values."""
    vals = [float(mapping.lift_values[label]) for label in labels]
    return float(np.mean(vals))


def label_token_id_list(label_token_ids: Any) -> list[int]:
    """The label token ids in ``LABELS`` order, from a mapping or a sequence."""
    if isinstance(label_token_ids, Mapping):
        return [int(label_token_ids[label]) for label in LABELS]
    ids = [int(i) for i in label_token_ids]
    if len(ids) != len(LABELS):
        raise ValueError(f"expected {len(LABELS)} label token ids, got {ids}")
    return ids


def assemble_rows(
    meta: Sequence[Mapping[str, Any]],
    probs: np.ndarray,
    reasons: Sequence[Sequence[str | None]] | None,
    mapping: RewardMapping,
    critic_id: str,
    scored_at: datetime,
) -> list[dict[str, Any]]:
    """Score rows (``SCORES_SCHEMA``) from ``probs[video, dimension, label]``."""
    rows = []
    for i, m in enumerate(meta):
        row: dict[str, Any] = {
            "video_id": m.get("video_id"),
            **{c: m.get(c) for c in META_COLUMNS},
            "caption_id": m.get("caption_id") or caption_id(m.get("caption")),
            "critic_id": critic_id,
            "scored_at": scored_at,
        }
        labels_i, rewards_i = dimension_rewards(probs[i], mapping)
        for j, d in enumerate(DIMENSIONS):
            for k, label in enumerate(LABELS):
                row[f"{PROB_COLUMNS[label]}_{d}"] = float(probs[i, j, k])
            row[f"label_{d}"] = labels_i[j]
            row[f"reward_{d}"] = float(rewards_i[j])
            row[f"reason_{d}"] = reasons[i][j] if reasons is not None else None
        row["reward"] = float(np.mean(rewards_i))
        row["reward_lift"] = lift_reward(labels_i, mapping)
        rows.append(row)
    return rows


def rows_to_scores_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in SCORES_SCHEMA} for r in rows], schema=SCORES_SCHEMA)


# --------------------------------------------------------------------------- the critic
def adapter_base_model(adapter_dir: str, default: str | None = None) -> str:
    """The base model an adapter was trained on (``base_model_name_or_path`` of adapter_config.json);
    ``default`` when it names none (LiFT's released LiFT-Critic adapters record ``""``)."""
    cfg_uri = storage.join(adapter_dir, "adapter_config.json")
    if not storage.exists(cfg_uri):
        raise FileNotFoundError(f"not a PEFT adapter dir (no adapter_config.json): {adapter_dir}")
    base = storage.read_json(cfg_uri).get("base_model_name_or_path") or default
    if not base:
        raise ValueError(f"{cfg_uri} names no base_model_name_or_path: give the base model "
                         "(--critic-base, or critic.model in the config)")
    return str(base)


def local_copy(uri: str) -> str:
    """Models load from local dirs: a remote adapter is copied once into a local cache."""
    try:
        return storage.local_dir(uri, "adapter_config.json")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"not a PEFT adapter dir (no adapter_config.json): {uri}") from err


class CriticScorer:
    """The critic loaded once; scores batches of decoded videos.

    In-process: ``scorer.score(frames, captions)`` returns probability arrays and reasons,
    ``scorer.score_rows(meta, frames)`` returns ``SCORES_SCHEMA`` rows. As a Ray Data callable
    class, ``scorer(batch)`` maps a frames batch (``video_id``, ``frames``; ``caption``/``uri``/
    ``source`` from the batch or from ``metadata``) to a scores table: one row per (video, caption)
    that ``metadata`` lists for the video.
    """

    def __init__(
        self,
        adapter: str,
        *,
        model: str | None = None,
        critic: CriticConfig | None = None,
        score: ScoreConfig | None = None,
        frame_size: tuple[int, int] | None = None,
        rationale: bool | None = None,
        device: str | None = None,
        metadata: pa.Table | Any | None = None,
        num_threads: int | None = None,
    ):
        import torch

        from lift_core.critic.backbone import critic_id, default_device, load_critic

        critic = critic or CriticConfig()
        self.score_cfg = score or ScoreConfig()
        self.mapping = RewardMapping.from_config(critic, self.score_cfg)
        self.rationale = self.score_cfg.rationale if rationale is None else bool(rationale)
        if num_threads:
            torch.set_num_threads(int(num_threads))
        # Default: CUDA when visible. A Ray actor without GPUs sees none (Ray empties CUDA_VISIBLE_DEVICES).
        device = device or default_device()
        adapter_local = local_copy(adapter)
        base = model or adapter_base_model(adapter_local)
        if frame_size is None:
            d = DecodeConfig()
            frame_size = (d.height, d.width)
        self.loaded = load_critic(base, adapter_local, backbone=critic.backbone, device=device, frame_size=frame_size)
        self.loaded.model.eval()
        self.critic_id = critic_id(base, adapter_local)
        self.label_ids = label_token_id_list(self.loaded.label_token_ids)
        self._metadata = _metadata_index(metadata)

    # ------------------------------------------------------------------ scoring
    def _encode(self, frames: Sequence[np.ndarray], captions: Sequence[str]):
        from lift_core.critic.backbone import encode_batch, to_device

        # One row per (video, question), video-major: row 3*i + j is video i, dimension j.
        videos = [f for f in frames for _ in DIMENSIONS]
        caps = [c for c in captions for _ in DIMENSIONS]
        dims = [d for _ in frames for d in DIMENSIONS]
        return to_device(encode_batch(self.loaded, videos, caps, dims), self.loaded.device)

    def score(
        self, frames: Sequence[np.ndarray], captions: Sequence[str], rationale: bool | None = None
    ) -> tuple[np.ndarray, list[list[str | None]] | None]:
        """``probs[video, dimension, label]`` (label order ``LABELS``) and, optionally, reasons."""
        if len(frames) != len(captions):
            raise ValueError(f"{len(frames)} videos but {len(captions)} captions")
        want_reasons = self.rationale if rationale is None else rationale
        if not len(frames):
            return np.zeros((0, len(DIMENSIONS), len(LABELS))), ([] if want_reasons else None)
        probs_parts, reasons = [], [] if want_reasons else None
        step = max(1, self.score_cfg.batch_size)
        for start in range(0, len(frames), step):
            chunk_f, chunk_c = frames[start : start + step], captions[start : start + step]
            inputs = self._encode(chunk_f, chunk_c)
            if want_reasons:
                p, r = self._generate(inputs)
                reasons.extend(r[i * len(DIMENSIONS) : (i + 1) * len(DIMENSIONS)] for i in range(len(chunk_f)))
            else:
                p = self._forward(inputs)
            probs_parts.append(p.reshape(len(chunk_f), len(DIMENSIONS), len(LABELS)))
        return np.concatenate(probs_parts, axis=0), reasons

    def _forward(self, inputs: dict) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.loaded.backbone.answer_logits(self.loaded.model, inputs)
        return label_probabilities(logits, self.label_ids)

    def _generate(self, inputs: dict) -> tuple[np.ndarray, list[str | None]]:
        import torch

        with torch.inference_mode():
            # The first token is forced to be a label, so the reason explains the reported label.
            first_logits, texts = self.loaded.backbone.generate(
                self.loaded.model, self.loaded.processor, inputs,
                first_token_ids=self.label_ids, max_new_tokens=self.score_cfg.max_new_tokens,
            )
        # The raw logits of the first generated step are the first-answer-position logits.
        probs = label_probabilities(first_logits, self.label_ids)
        labels = [LABELS[i] for i in probs.argmax(axis=1)]
        return probs, [_reason_of(label, text) for label, text in zip(labels, texts)]

    def score_rows(
        self, meta: Sequence[Mapping[str, Any]], frames: Sequence[np.ndarray], rationale: bool | None = None
    ) -> list[dict[str, Any]]:
        """``SCORES_SCHEMA`` rows; ``meta`` gives each video's ``video_id``, ``caption`` (``uri``, ``source``)."""
        probs, reasons = self.score(frames, [str(m["caption"]) for m in meta], rationale)
        return assemble_rows(meta, probs, reasons, self.mapping, self.critic_id, datetime.now(timezone.utc))

    # ------------------------------------------------------------------ Ray Data
    def __call__(self, batch: pa.Table | Mapping[str, Any]) -> pa.Table:
        """A frames batch -> score rows (``SCORES_WITH_ERROR_SCHEMA``), one per (video, caption).

        With ``metadata``, a video is scored once for each of its captions there (the frames are
        decoded once and shared). A video whose stored frames cannot be used gets, per caption, a row
        with only ``error`` set (the caller quarantines it), so one bad row never fails its batch.
        """
        from lift_core.video.frames import frames_to_numpy

        table = batch if isinstance(batch, pa.Table) else None
        columns = table.column_names if table is not None else list(batch)
        ids = [str(v) for v in (table.column("video_id").to_pylist() if table is not None else batch["video_id"])]
        frames_col = table.column("frames") if table is not None else batch["frames"]
        meta, keep, failed = [], [], []
        for i, vid in enumerate(ids):
            if self._metadata is not None:
                found = self._metadata.get(vid)
                if not found:  # not selected for scoring in this run (already scored, or filtered)
                    continue
                metas = [{**m, "video_id": vid} for m in found]
            elif "caption" in columns:
                metas = [{**{c: _cell(table, batch, c, i) for c in META_COLUMNS if c in columns}, "video_id": vid}]
            else:
                raise ValueError("frames batch has no 'caption' column and the scorer was given no metadata")
            try:
                video = frames_to_numpy(frames_col.slice(i, 1) if table is not None else frames_col[i : i + 1])[0]
                check_video(video)
            except Exception as err:  # a bad stored row is one bad input, not a failed batch
                why = f"unusable frames: {type(err).__name__}: {err}"
                failed.extend({**m, "critic_id": self.critic_id, "error": why} for m in metas)
                continue
            meta.extend(metas)
            keep.extend(video for _ in metas)
        rows = self.score_rows(meta, keep) if meta else []
        out = pa.Table.from_pylist(
            [{f.name: r.get(f.name) for f in SCORES_WITH_ERROR_SCHEMA} for r in [*rows, *failed]],
            schema=SCORES_WITH_ERROR_SCHEMA,
        )
        release_freed_memory()
        return out


def check_video(video: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``video`` is a non-empty uint8 [T, H, W, 3] array."""
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or min(video.shape[:3]) < 1:
        raise ValueError(f"expected uint8 [T,H,W,3] frames, got {video.dtype} {video.shape}")


_MALLOC_TRIM: Any = None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Measured: without it, a Ray Data scoring actor's RSS grew by about 5 MB per batch (1,000 videos:
    +2.3 GB) although the memory was free; with it, the actor stays flat. A no-op off glibc.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", False)
        except OSError:
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


def _reason_of(label: str, text: str) -> str:
    """The reason of a generated ``"Label. reason"`` whose first token was forced to ``label``."""
    parsed, reason = parse_answer(text)
    if parsed is not None:
        return reason
    # The model did not separate label and reason as trained: keep everything it said after the label.
    rest = text.strip()
    return rest[len(label):].lstrip(" .:;,") if rest.startswith(label) else rest


def _cell(table: pa.Table | None, batch: Any, column: str, i: int) -> Any:
    if table is not None:
        return table.column(column)[i].as_py()
    value = batch[column][i]
    return value.item() if hasattr(value, "item") else value


def _metadata_index(metadata: pa.Table | Any | None) -> dict[str, list[dict[str, Any]]] | None:
    """video_id -> [{uri, caption, caption_id, source}, ...], one per caption to score the video with;
    accepts a table or a Ray object ref to one."""
    if metadata is None:
        return None
    if not isinstance(metadata, pa.Table):
        import ray

        metadata = ray.get(metadata)
    wanted = (*META_COLUMNS, "caption_id")
    cols = {c: metadata.column(c).to_pylist() for c in ("video_id", *wanted) if c in metadata.column_names}
    index: dict[str, list[dict[str, Any]]] = {}
    for i, vid in enumerate(cols["video_id"]):
        index.setdefault(vid, []).append({c: cols[c][i] for c in wanted if c in cols})
    return index


# --------------------------------------------------------------------------- in-process helpers
def score_videos(
    scorer: CriticScorer,
    uris: Sequence[str],
    captions: Sequence[str],
    *,
    decode: DecodeConfig | None = None,
    source: str = "generated",
    rationale: bool | None = None,
) -> list[dict[str, Any]]:
    """Decode each video once (``decode`` sampling) and score it: ``SCORES_SCHEMA`` rows in input order.

    Used in-process by T2V evaluation and rescoring. An undecodable video raises
    ``lift_core.video.io.VideoDecodeError`` naming it.
    """
    from lift_core.video.io import VideoDecodeError, read_video

    if len(uris) != len(captions):
        raise ValueError(f"{len(uris)} videos but {len(captions)} captions")
    d = decode or DecodeConfig()
    frames, meta = [], []
    for uri, cap in zip(uris, captions):
        try:
            v = read_video(uri, d.frames, d.height, d.width, backend=d.backend)
        except VideoDecodeError as err:
            raise VideoDecodeError(f"{uri}: {err}") from None
        frames.append(v.frames)
        meta.append({"video_id": storage.content_id(uri), "uri": uri, "caption": cap, "source": source})
    return scorer.score_rows(meta, frames, rationale)


def lift_critic_output(
    rows: Sequence[Mapping[str, Any]],
    entries: Sequence[Any] | None = None,
    entry_keys: Mapping[int, tuple[str, str]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """LiFT's ``critic_output_*.json`` items from score rows: ``"Label. reason"`` per dimension.

    With ``entries`` (LiFT's inference input, ``[{video_id, video, caption}]``), each entry is kept
    as is and gains the three keys from the row of its own (``video_id``, ``caption_id``), given by
    ``entry_keys[entry index]`` (``source_pairs``). An entry with no key (rejected at ingest, its
    file missing) or whose key has no row (not scored) is never filled from another entry's scores:
    it is returned in the second list, as ``"<video> (entry <index>)"``. Without ``entries``, one
    item per row.
    """
    from lift_core.domain import CRITIC_OUTPUT_KEYS

    def answers(row: Mapping[str, Any]) -> dict[str, str]:
        return {CRITIC_OUTPUT_KEYS[d]: format_label_reason(row[f"label_{d}"], row.get(f"reason_{d}")) for d in DIMENSIONS}

    if entries is None:
        items = [{"video_id": r["video_id"], "video": r["uri"], "caption": r["caption"], **answers(r)} for r in rows]
        return items, []
    by_key = {(r["video_id"], r.get("caption_id") or caption_id(r.get("caption"))): r for r in rows}
    keys = entry_keys or {}
    items, missing = [], []
    for i, entry in enumerate(entries):
        key = keys.get(i)
        row = by_key.get(key) if key is not None else None
        if row is None:
            video = entry.get("video") if isinstance(entry, Mapping) else None
            missing.append(f"{video if isinstance(video, str) else repr(entry)[:200]} (entry {i})")
            continue
        items.append({**entry, **answers(row)})
    return items, missing


# Readers that turn each accepted entry into exactly one record, in entry order.
ONE_RECORD_PER_ENTRY = ("lift-inference", "critic-output", "alignment")


def source_pairs(
    fmt: str, src: str, manifest: Sequence[Mapping[str, Any]], limits: Any = None,
) -> tuple[list[dict[str, Any]], dict[int, tuple[str, str]]]:
    """What to score for the entries of ``src``: manifest rows, one per distinct (video, caption).

    Ingest keeps one manifest row per video content (``manifest``: its first caption). Scores depend
    on the caption too, so ``src`` is read again with the reader ingest used (the same entries are
    accepted and rejected) and every accepted entry contributes its own (``video_id``, ``caption_id``).
    A video's id comes from ``manifest`` by URI, else from its content (a copy of a kept video); an
    entry whose file cannot be read has none and is not scored (ingest quarantined it).

    ``limits`` (``InputLimits``: the config's ``data.*`` bounds) must be those ingest used, so that
    the same entries are accepted.

    Returns the rows (``MANIFEST_SCHEMA`` columns plus ``caption_id``, the first entry of each pair
    wins) and, for formats whose entries are one record each (``ONE_RECORD_PER_ENTRY``), the
    ``{entry index: (video_id, caption_id)}`` of the accepted entries.
    """
    from lift_core.data.inputs import InputLimits
    from lift_core.data.sources import read_source

    limits = limits or InputLimits()
    result = read_source(fmt, src, limits=limits)
    ids = {r["uri"]: r["video_id"] for r in manifest}
    split = {r["video_id"]: r.get("split") for r in manifest}
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    record_keys: list[tuple[str, str] | None] = []
    for rec in result.records:
        vid = ids.get(rec["uri"])
        if vid is None:
            try:
                vid = ids[rec["uri"]] = limits.video_content_id(rec["uri"])
            except (OSError, ValueError):  # missing, unreadable or refused: quarantined by ingest
                record_keys.append(None)
                continue
        key = (vid, caption_id(rec["caption"]))
        pairs.setdefault(key, {**rec, "video_id": vid, "caption_id": key[1], "split": split.get(vid)})
        record_keys.append(key)
    entry_keys: dict[int, tuple[str, str]] = {}
    if fmt in ONE_RECORD_PER_ENTRY:
        rejected = {r.index for r in result.rejects if r.index is not None}
        accepted = [i for i in range(len(result.records) + len(rejected)) if i not in rejected]
        if len(accepted) != len(record_keys):
            raise RuntimeError(f"{src}: {len(record_keys)} records for {len(accepted)} accepted entries ({fmt})")
        entry_keys = {i: k for i, k in zip(accepted, record_keys) if k is not None}
    return list(pairs.values()), entry_keys


def format_label_reason(label: str, reason: str | None) -> str:
    """``"Label. reason"`` (``"Label."`` when there is no reason)."""
    return format_answer(label, reason)
