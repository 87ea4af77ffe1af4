"""Critic training examples: one per (video, dimension) of the rated (``lift-hra``) manifest rows.

Frames come from the decode stage's Parquet (``lift_core.video.frames``); videos are never decoded
again. ``FrameStore`` copies the needed videos' frames once into a local memory-mapped array, so a
training worker reads any video in O(1) without holding every frame in memory.

Problems never pass silently: a rating with an unknown label, or a rated video without decoded
frames (quarantined by decode, or missing), becomes a quarantine row.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS
from lift_core.critic.prompts import format_answer
from lift_core.schemas import quarantine_row

RATED_SOURCE = "lift-hra"
STAGE = "train_critic"


@dataclass(frozen=True)
class CriticExample:
    video_id: str
    caption: str
    dimension: str
    label: str
    reason: str
    split: str

    @property
    def answer(self) -> str:
        return format_answer(self.label, self.reason)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def examples_from_rows(
    rows: Iterable[dict[str, Any]], source: str = RATED_SOURCE
) -> tuple[list[CriticExample], list[dict[str, Any]]]:
    """Examples from manifest rows of ``source``; unusable ratings become quarantine rows."""
    examples, quarantine = [], []
    for r in rows:
        if r.get("source") != source:
            continue
        for dim in DIMENSIONS:
            label = r.get(f"label_{dim}")
            if label is None:
                continue
            if label not in LABELS:
                quarantine.append(quarantine_row(r.get("uri"), STAGE, f"unknown {dim} label {label!r}", r.get("video_id")))
                continue
            if not r.get("caption"):
                quarantine.append(quarantine_row(r.get("uri"), STAGE, "empty caption", r.get("video_id")))
                break
            examples.append(
                CriticExample(str(r["video_id"]), str(r["caption"]), dim, label, str(r.get(f"reason_{dim}") or ""),
                              str(r.get("split") or ""))
            )
    return examples, quarantine


def load_examples(manifest_uri: str, source: str = RATED_SOURCE) -> tuple[list[CriticExample], list[dict[str, Any]]]:
    """All rated examples of a manifest (every split) and the quarantine rows of unusable ratings."""
    table = storage.read_table(manifest_uri)
    missing = {"video_id", "uri", "caption", "source", "split"} - set(table.column_names)
    if missing:
        raise ValueError(f"{manifest_uri} is not a manifest: missing columns {sorted(missing)}")
    return examples_from_rows(table.to_pylist(), source)


def frames_index(frames_uri: str) -> set[str]:
    """The video ids present in a frames output (reads only the ``video_id`` column)."""
    from lift_core.video.frames import shard_files

    ids: set[str] = set()
    for uri in shard_files(frames_uri):
        ids.update(storage.read_table(uri, columns=["video_id"]).column("video_id").to_pylist())
    return ids


def drop_without_frames(
    examples: Sequence[CriticExample], available: set[str], uris: dict[str, str] | None = None,
    frames_uris: Sequence[str] | None = None,
) -> tuple[list[CriticExample], list[dict[str, Any]]]:
    """Keep examples whose video has decoded frames; one quarantine row per video without.

    With the ``frames_uris`` of a decode stage, each row carries decode's reason, and a video that
    decode never quarantined raises ``MissingFramesError`` (its shard was lost): never a silent skip."""
    from lift_core.video.decode_stage import missing_frames_reasons

    keep, missing = [], {}
    for ex in examples:
        if ex.video_id in available:
            keep.append(ex)
        else:
            missing[ex.video_id] = None
    rows = [{"video_id": vid, "uri": (uris or {}).get(vid)} for vid in missing]
    reasons = (missing_frames_reasons(frames_uris, rows) if frames_uris and rows else None) or {}
    quarantine = [
        quarantine_row(r["uri"], STAGE, reasons.get(r["video_id"], "no decoded frames for this rated video"),
                       r["video_id"]) for r in rows
    ]
    return keep, quarantine


class FrameStore:
    """Frames of a fixed set of videos in one local memory-mapped uint8 array ``[N, T, H, W, 3]``.

    ``FrameStore.build`` streams the frames Parquet one shard at a time into ``<dir>/frames.npy``
    (written to a temporary name, then renamed: a crashed build is rebuilt, never half-read).
    """

    def __init__(self, directory: str):
        with open(os.path.join(directory, "index.json")) as f:
            meta = json.load(f)
        self.index: dict[str, int] = meta["index"]
        self.array = np.load(os.path.join(directory, "frames.npy"), mmap_mode="r")
        self.directory = directory

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, video_id: str) -> np.ndarray:
        return np.asarray(self.array[self.index[video_id]])

    @classmethod
    def build(cls, frames_uri: str, video_ids: Iterable[str], directory: str) -> "FrameStore":
        from lift_core.video.frames import iter_frames

        wanted = sorted(set(video_ids))
        if not wanted:
            raise ValueError("FrameStore.build: no video ids")
        if os.path.exists(os.path.join(directory, "index.json")):
            store = cls(directory)
            if set(store.index) == set(wanted):
                return store
            os.remove(os.path.join(directory, "index.json"))  # stale: rebuilt below
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".frames-{uuid.uuid4().hex[:8]}.npy")
        index: dict[str, int] = {}
        array = None
        try:
            for row in iter_frames(frames_uri, wanted):
                vid, frames = row["video_id"], row["frames"]
                if vid in index:
                    continue  # the same video in two shards (a resumed decode): same bytes, keep one
                if array is None:
                    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(wanted), *frames.shape))
                if frames.shape != array.shape[1:]:
                    raise ValueError(
                        f"video {vid}: frames {frames.shape} differ from {array.shape[1:]}; "
                        "the critic needs one decode size for all videos"
                    )
                index[vid] = len(index)
                array[index[vid]] = frames
            if array is None:
                raise FileNotFoundError(f"none of the {len(wanted)} wanted videos is in {frames_uri}")
            absent = [v for v in wanted if v not in index]
            if absent:
                raise KeyError(f"{len(absent)} videos have no frames in {frames_uri} (e.g. {absent[:3]})")
            array.flush()
            del array
            os.replace(tmp, os.path.join(directory, "frames.npy"))
            with open(os.path.join(directory, ".index.json"), "w") as f:
                json.dump({"index": index, "frames_uri": frames_uri}, f)
            os.replace(os.path.join(directory, ".index.json"), os.path.join(directory, "index.json"))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return cls(directory)
