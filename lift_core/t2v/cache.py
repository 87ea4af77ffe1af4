"""Latent and text-embedding cache: each video is VAE-encoded once, each caption T5-encoded once.

Layout (safetensors shards, any fsspec root)::

    <root>/latents/<family>-<encoder id>-<F>x<H>x<W>/part-<uuid>.safetensors   key: video_id (content hash)
    <root>/text/<family>-<encoder id>-L<max_len>/part-<uuid>.safetensors        key: sha256(caption)[:16]

- A namespace names the encoder by the *content* of its files (``encoder_id``) and the input shape, so
  a different VAE, text encoder or resolution never reads stale entries, and the same encoder
  found at another path (a copy, a rebuilt tiny model with the same seed) shares them.
- Keys are content hashes: the same video under another URI or in another run is a hit. Nothing in a
  key depends on the training run (world size, batch size, steps), so every run shares the cache.
- Writers only add new shards (atomic moves); readers ignore temporary names. Duplicate keys in two
  shards (two runs filling at once) are harmless: both hold the same values.
- The latent cache stores the VAE's latent *distribution* (mean and log-variance), so training still
  samples a fresh latent per step as diffusers' ``train_cogvideox_lora.py`` does.

Filling runs on a Ray Data actor pool (``CacheEncoder`` on ``lift_core.distributed.actor_pool``): videos
are decoded to the T2V shape with ``lift_core.video.io.read_video``; an undecodable video, or a file
that holds another video than its ``video_id`` (``lift_core.data.manifest.checked_video_source``),
becomes a quarantine row, never a silent drop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pyarrow as pa

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.data.inputs import InputLimits

SHARD_SUFFIX = ".safetensors"


def caption_key(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- encoder identity
def resolve_model_dir(model: str) -> str:
    """A local directory for ``model``: itself, or the local hub snapshot of a hub id."""
    local = storage.local_path(model)
    if local is not None and os.path.isdir(local):
        return local
    from huggingface_hub import snapshot_download

    return snapshot_download(model)


def _file_digest(path: str) -> str:
    """sha256 of all of a file's bytes: a change anywhere in an encoder's weights is another encoder. The
    stat cache (``lift_core.hash_cache``) spares rereading unchanged weights of real models."""
    from lift_core.hash_cache import file_sha256

    fs, local = storage.fs_and_path(path)
    return file_sha256(fs, local, verify=storage.verify_requested())


def encoder_id(model: str, components: Sequence[str]) -> str:
    """Content fingerprint of the pipeline subfolders that make an encoder (e.g. ``vae``)."""
    root = resolve_model_dir(model)
    h = hashlib.sha256()
    for comp in components:
        base = os.path.join(root, comp)
        if not os.path.isdir(base):
            raise FileNotFoundError(f"{model} has no {comp}/ folder")
        for dirpath, _, files in sorted(os.walk(base)):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                h.update(os.path.relpath(path, root).encode())
                h.update(_file_digest(path).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class CacheNamespaces:
    root: str
    latents: str
    text: str

    @property
    def latents_uri(self) -> str:
        return storage.join(self.root, "latents", self.latents)

    @property
    def text_uri(self) -> str:
        return storage.join(self.root, "text", self.text)


def cache_root(cfg: PipelineConfig) -> str:
    """``align.cache_root`` with ``{run_root}`` expanded (defaults are not expanded by the loader) and
    local paths made absolute (Ray workers do not share the driver's working directory)."""
    return storage.abspath_if_local(cfg.align.cache_root)


def namespaces(cfg: PipelineConfig, model: str) -> CacheNamespaces:
    from lift_core.t2v.spec import get_spec

    spec = get_spec(cfg.t2v.family)
    t = cfg.t2v
    return CacheNamespaces(
        root=cache_root(cfg),
        latents=f"{t.family}-{encoder_id(model, spec.latent_components)}-{t.num_frames}x{t.height}x{t.width}-{t.dtype}",
        text=f"{t.family}-{encoder_id(model, spec.text_components)}-L{t.max_sequence_length}-{t.dtype}",
    )


# --------------------------------------------------------------------------- shards
def _read_header(uri: str) -> dict[str, Any]:
    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


class TensorCache:
    """Content-keyed tensors in safetensors shards under one folder (see the module doc)."""

    def __init__(self, uri: str):
        self.uri = uri
        self._index: dict[str, str] | None = None
        self._loaded: dict[str, dict[str, Any]] = {}

    def shards(self) -> list[str]:
        fs, path = storage.fs_and_path(self.uri)
        if not fs.exists(path):
            return []
        names = sorted(p for p in fs.find(path) if p.endswith(SHARD_SUFFIX) and "/." not in p[len(path):])
        return [storage.to_uri(fs, p) for p in names]

    def index(self, refresh: bool = False) -> dict[str, str]:
        """key -> shard URI (reads only the shards' headers)."""
        if self._index is None or refresh:
            index: dict[str, str] = {}
            for shard in self.shards():
                for key in _read_header(shard):
                    if key != "__metadata__":
                        index.setdefault(key, shard)
            self._index = index
        return self._index

    def keys(self, refresh: bool = False) -> set[str]:
        return set(self.index(refresh))

    def put_many(self, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> str | None:
        """Write one new shard with ``tensors`` (key -> tensor); returns its URI."""
        if not tensors:
            return None
        from safetensors.torch import save

        blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
        uri = storage.join(self.uri, f"part-{uuid.uuid4().hex}{SHARD_SUFFIX}")
        storage.write_bytes_atomic(uri, blob)
        if self._index is not None:
            for k in tensors:
                self._index.setdefault(k, uri)
        return uri

    def _shard_tensors(self, shard: str, keys: Iterable[str]) -> dict[str, Any]:
        local = storage.local_path(shard)
        if local is not None:  # lazy: only the requested tensors are read
            from safetensors import safe_open

            with safe_open(local, framework="pt") as f:
                return {k: f.get_tensor(k) for k in keys}
        if shard not in self._loaded:
            from safetensors.torch import load

            if len(self._loaded) >= 4:  # keep a few remote shards in memory
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[shard] = load(storage.read_bytes(shard))
        return {k: self._loaded[shard][k] for k in keys}

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        index = self.index()
        missing = [k for k in keys if k not in index]
        if missing:
            index = self.index(refresh=True)
            missing = [k for k in keys if k not in index]
            if missing:
                raise KeyError(f"{len(missing)} keys not in the cache {self.uri}: {missing[:3]}")
        by_shard: dict[str, list[str]] = {}
        for k in dict.fromkeys(keys):
            by_shard.setdefault(index[k], []).append(k)
        out: dict[str, Any] = {}
        for shard, ks in by_shard.items():
            out.update(self._shard_tensors(shard, ks))
        return out


# --------------------------------------------------------------------------- filling
CACHE_JOB_SCHEMA = pa.schema([("kind", pa.string()), ("key", pa.string()), ("uri", pa.string()), ("caption", pa.string())])
CACHE_RESULT_SCHEMA = pa.schema([("kind", pa.string()), ("key", pa.string()), ("uri", pa.string()), ("error", pa.string())])


class CacheEncoder:
    """Loads the VAE and text encoder once; encodes a batch of cache jobs and writes one shard per kind.

    Jobs: ``kind`` ("video": ``key`` = video_id, ``uri``; "text": ``key`` = caption key, ``caption``).
    Returns one row per job with ``error`` null on success.
    """

    def __init__(self, model: str, t2v: dict, ns: dict, num_gpus: float = 0.0, num_threads: int | None = None,
                 limits: dict | None = None):
        import torch

        from lift_core.data.inputs import InputLimits

        from lift_core.config import T2VConfig
        from lift_core.t2v.spec import get_spec

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.t2v = T2VConfig.model_validate(t2v)
        self.spec = get_spec(self.t2v.family)
        device = "cuda" if num_gpus and torch.cuda.is_available() else "cpu"
        self.pipe = self.spec.load_pipeline(model, self.t2v.dtype, device, parts="encoders")
        self.spec.reduce_vae_memory(self.pipe, self.t2v.vae_tiling, self.t2v.vae_slicing)
        self.ns = CacheNamespaces(**ns)
        self.latents = TensorCache(self.ns.latents_uri)
        self.text = TensorCache(self.ns.text_uri)
        self.limits = InputLimits(**(limits or {}))  # the config's data.* bounds

    def encode_video(self, uri: str, video_id: str | None = None):
        import torch

        from lift_core.data.manifest import checked_video_source
        from lift_core.t2v.spec import frames_to_pixels
        from lift_core.video.io import read_video

        t = self.t2v
        # The latents are cached under video_id: the file must hold that video (a manifest row naming
        # another video, or a file replaced since ingest, is a failed job with both ids).
        src = checked_video_source(video_id, uri, self.limits) if video_id else uri
        video = read_video(src, num_frames=t.num_frames, height=t.height, width=t.width)
        params = self.spec.encode_video_dist(self.pipe, frames_to_pixels(video.frames))
        return params[0].to(getattr(torch, t.dtype))

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        from lift_core.video.io import VideoDecodeError

        jobs = batch.to_pylist()
        results, latents, texts = [], {}, {}
        for job in jobs:
            if job["kind"] != "video":
                continue
            try:
                latents[job["key"]] = self.encode_video(job["uri"], job["key"])
                results.append({"kind": "video", "key": job["key"], "uri": job["uri"], "error": None})
            except VideoDecodeError as err:
                results.append({"kind": "video", "key": job["key"], "uri": job["uri"], "error": f"VideoDecodeError: {err}"})
        captions = [j for j in jobs if j["kind"] == "text"]
        if captions:
            embeds = self.spec.encode_text(self.pipe, [j["caption"] for j in captions], self.t2v.max_sequence_length)
            dtype = getattr(torch, self.t2v.dtype)
            for j, e in zip(captions, embeds):
                texts[j["key"]] = e.to(dtype)
                results.append({"kind": "text", "key": j["key"], "uri": None, "error": None})
        self.latents.put_many(latents, {"kind": "latent_dist", "layout": "[2C, F, H, W] mean|logvar"})
        self.text.put_many(texts, {"kind": "text_embeds", "layout": "[L, D]"})
        return pa.Table.from_pylist(results, schema=CACHE_RESULT_SCHEMA)


@dataclass
class CacheReport:
    videos_cached: int  # hits
    videos_encoded: int
    texts_cached: int
    texts_encoded: int
    failed: list[dict[str, Any]]  # {"key", "uri", "error"}: undecodable videos

    def counts(self) -> dict[str, int]:
        return {
            "cache_videos_hit": self.videos_cached,
            "cache_videos_encoded": self.videos_encoded,
            "cache_texts_hit": self.texts_cached,
            "cache_texts_encoded": self.texts_encoded,
            "cache_failed": len(self.failed),
        }


def fill_cache(
    cfg: PipelineConfig,
    model: str,
    ns: CacheNamespaces,
    videos: Sequence[tuple[str, str]],
    captions: Sequence[str],
    batch_size: int = 8,
    progress=None,
) -> CacheReport:
    """Encode the (video_id, uri) pairs and captions missing from the cache, on a Ray Data actor pool."""
    from lift_core.progress import count, resolve

    progress = resolve(progress)
    have_latents = TensorCache(ns.latents_uri).keys()
    have_text = TensorCache(ns.text_uri).keys()
    uniq_videos = dict(videos)
    uniq_caps = {caption_key(c): c for c in captions}
    jobs = [{"kind": "video", "key": k, "uri": u, "caption": None} for k, u in uniq_videos.items() if k not in have_latents]
    jobs += [{"kind": "text", "key": k, "uri": None, "caption": c} for k, c in uniq_caps.items() if k not in have_text]
    n_video_jobs = sum(1 for j in jobs if j["kind"] == "video")
    report = CacheReport(
        videos_cached=len(uniq_videos) - n_video_jobs,
        videos_encoded=0,
        texts_cached=len(uniq_caps) - (len(jobs) - n_video_jobs),
        texts_encoded=0,
        failed=[],
    )
    progress(0.0, f"cache: {report.videos_cached} latents and {report.texts_cached} embeddings hit, {len(jobs)} to encode")
    if not jobs:
        return report
    from lift_core.distributed.actor_pool import ActorPool, map_on_actor_pool

    a = cfg.align
    results = map_on_actor_pool(
        pa.Table.from_pylist(jobs, schema=CACHE_JOB_SCHEMA),
        CacheEncoder,
        {
            "model": model,
            "t2v": cfg.t2v.model_dump(mode="json"),
            "ns": {"root": ns.root, "latents": ns.latents, "text": ns.text},
            "num_gpus": a.cache_num_gpus_per_actor,
            "limits": dataclasses.asdict(InputLimits.from_config(cfg.data)),
        },
        pool=ActorPool(a.cache_num_actors, a.cache_num_cpus_per_actor, a.cache_num_gpus_per_actor),
        batch_size=batch_size,
        expected_rows=len(jobs),
        what="cache",
        ray_config=cfg.ray,
    )
    for batch in results:
        for row in batch.to_pylist():
            if row["error"]:
                report.failed.append({"key": row["key"], "uri": row["uri"], "error": row["error"]})
            elif row["kind"] == "video":
                report.videos_encoded += 1
            else:
                report.texts_encoded += 1
        count(progress, report.videos_encoded + report.texts_encoded + len(report.failed), len(jobs), "encodings",
              "cache: latents and caption embeddings")
    progress(1.0, f"cache: encoded {report.videos_encoded} videos and {report.texts_encoded} captions")
    return report


__all__ = [
    "CacheEncoder",
    "CacheNamespaces",
    "CacheReport",
    "TensorCache",
    "cache_root",
    "caption_key",
    "encoder_id",
    "fill_cache",
    "namespaces",
    "resolve_model_dir",
]
