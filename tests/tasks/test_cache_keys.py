"""The cache key of a stage task moves exactly when its outputs could change."""

from __future__ import annotations

from lift_core.config import load_config
from tasks.common import STAGE_SECTIONS, stage_fingerprint


def _cfg(*extra: str):
    return load_config("configs/demo.yaml", ["run_root=/tmp/lift-keys", *extra])


def test_a_stage_key_follows_its_own_sections_only():
    base = _cfg()
    align_changed = _cfg("align.min_reward=0.3")
    assert stage_fingerprint(base, "ingest") == stage_fingerprint(align_changed, "ingest")
    assert stage_fingerprint(base, "train_critic") == stage_fingerprint(align_changed, "train_critic")
    assert stage_fingerprint(base, "align") != stage_fingerprint(align_changed, "align")
    decode_changed = _cfg("decode.frames=4")
    assert stage_fingerprint(base, "decode") != stage_fingerprint(decode_changed, "decode")
    assert stage_fingerprint(base, "score") != stage_fingerprint(decode_changed, "score")  # frame size matters
    assert stage_fingerprint(base, "generate") == stage_fingerprint(decode_changed, "generate")
    # Where a run executes (Ray, Prefect settings) is not what it computes.
    assert all(stage_fingerprint(base, s) == stage_fingerprint(_cfg("ray.num_cpus=1", "prefect.retries=0"), s)
               for s in STAGE_SECTIONS)


def test_a_stage_key_follows_the_content_of_inputs_given_by_hand(tmp_path):
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"version 1")
    first = stage_fingerprint(_cfg(), "decode", [str(manifest)])
    assert stage_fingerprint(_cfg(), "decode", [str(manifest)]) == first
    manifest.write_bytes(b"version 2")  # edited in place: same URI, new content, new key
    assert stage_fingerprint(_cfg(), "decode", [str(manifest)]) != first
