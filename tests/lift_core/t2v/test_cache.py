"""Latent + text-embedding cache: content keys, encoder identity, hits on rerun, bad videos quarantined."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from lift_core import storage
from lift_core.t2v.cache import TensorCache, caption_key, encoder_id, fill_cache, namespaces


def test_tensor_cache_shards(tmp_path):
    cache = TensorCache(str(tmp_path / "c"))
    assert cache.keys() == set()
    cache.put_many({"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)})
    cache.put_many({"c": torch.zeros(1)})
    assert len(cache.shards()) == 2
    fresh = TensorCache(str(tmp_path / "c"))  # another process: reads the shard headers only
    assert fresh.keys() == {"a", "b", "c"}
    got = fresh.get_many(["c", "a"])
    assert torch.equal(got["a"], torch.arange(6.0).reshape(2, 3)) and got["c"].shape == (1,)
    with pytest.raises(KeyError, match="not in the cache"):
        fresh.get_many(["zzz"])
    (tmp_path / "c" / ".tmp-partial.safetensors").write_bytes(b"half a write")  # ignored
    assert TensorCache(str(tmp_path / "c")).keys() == {"a", "b", "c"}


def test_encoder_id_follows_content_not_path(tiny_t2v, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_t2v, copy)
    assert encoder_id(tiny_t2v, ["vae"]) == encoder_id(str(copy), ["vae"])
    assert encoder_id(tiny_t2v, ["vae"]) != encoder_id(tiny_t2v, ["text_encoder", "tokenizer"])
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one changed byte in the weights: a different encoder
    weights.write_bytes(bytes(data))
    assert encoder_id(tiny_t2v, ["vae"]) != encoder_id(str(copy), ["vae"])


def test_encoder_id_sees_a_change_anywhere_in_large_weights(tmp_path):
    """Real encoders' weights are gigabytes: a byte changed in the middle, far from both ends and with
    the size kept, is still another encoder (no stale latents)."""
    vae = tmp_path / "model" / "vae"
    vae.mkdir(parents=True)
    weights = vae / "diffusion_pytorch_model.safetensors"
    with open(weights, "wb") as f:
        f.truncate(96 << 20)  # sparse: 96 MiB of zeros, cheap to write
    before = encoder_id(str(tmp_path / "model"), ["vae"])
    with open(weights, "r+b") as f:
        f.seek(48 << 20)
        f.write(b"\x01")
    assert encoder_id(str(tmp_path / "model"), ["vae"]) != before


def test_fill_cache_hits_on_rerun_and_quarantines_bad_videos(ray_session, t2v_cfg, tiny_t2v, generated, tmp_path):
    cfg = t2v_cfg.model_copy(deep=True)
    cfg.align.cache_root = str(tmp_path / "cache")
    ns = namespaces(cfg, tiny_t2v)
    rows = storage.read_table(generated.outputs["generated"]).to_pylist()[:3]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    videos = [(r["video_id"], r["uri"]) for r in rows] + [("badbadbadbadbad0", str(bad))]
    # A real video under another video's id: latents are cached by id, so the file is checked first.
    videos.append(("0123456789abcdef", rows[0]["uri"]))
    captions = [r["caption"] for r in rows] + [rows[0]["caption"]]  # a repeated caption is encoded once

    first = fill_cache(cfg, tiny_t2v, ns, videos, captions)
    assert (first.videos_encoded, first.videos_cached) == (3, 0)
    assert first.texts_encoded == len({r["caption"] for r in rows})
    failed = {f["key"]: f["error"] for f in first.failed}
    assert sorted(failed) == ["0123456789abcdef", "badbadbadbadbad0"]
    assert all("VideoDecodeError" in e for e in failed.values())
    assert f"(expected 0123456789abcdef, actual {rows[0]['video_id']})" in failed["0123456789abcdef"]

    again = fill_cache(cfg, tiny_t2v, ns, videos[:3], captions[:3])
    assert (again.videos_encoded, again.videos_cached, again.texts_encoded) == (0, 3, 0)

    dists = TensorCache(ns.latents_uri).get_many([r["video_id"] for r in rows])
    t = cfg.t2v
    # [2C (mean|logvar), latent frames, H/8, W/8]
    assert dists[rows[0]["video_id"]].shape == (8, (t.num_frames - 1) // 4 + 1, t.height // 8, t.width // 8)
    embeds = TensorCache(ns.text_uri).get_many([caption_key(rows[0]["caption"])])
    assert embeds[caption_key(rows[0]["caption"])].shape == (t.max_sequence_length, 32)
    assert os.path.basename(ns.latents_uri).endswith(f"{t.num_frames}x{t.height}x{t.width}-{t.dtype}")
