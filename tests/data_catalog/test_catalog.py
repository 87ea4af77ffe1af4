"""The dataset catalog: every declared dataset is well formed and the configs' datasets exist."""

from __future__ import annotations

import pytest

from data_catalog.readers import READERS
from lift_core.config import DataConfig, load_config
from lift_core.data.catalog import load_catalog
from lift_core.data.ingest import resolve_datasets
from lift_core.data.sources import SourceError


def test_catalog_declares_demo_and_full_scale_datasets():
    catalog = load_catalog(DataConfig().catalog)  # the default: data_catalog/catalog.yaml
    for config in ("configs/demo.yaml", "configs/lift-cogvideox-2b.yaml"):
        for name in load_config(config).data.datasets:
            assert name in catalog, (config, name)
    for entry in catalog.values():
        assert entry.format in READERS and entry.uri and entry.source
    full = [catalog[n] for n in ("lift-hra-20k", "hd-vila-real", "vbench-prompts")]
    assert all(e.uri.startswith("s3://") for e in full)
    assert catalog["lift-hra-20k"].format == "lift-hra" and catalog["vbench-prompts"].format == "vbench-prompts"


def test_synth_placeholders_resolve_from_synth_outputs(tmp_path):
    cfg = load_config("configs/demo.yaml", [f"run_root={tmp_path}"])
    entries = resolve_datasets(cfg, {"videos_root": "s3://runs/synth/abc", "hra_json": "unused"})
    by_name = {e.name: e for e in entries}
    assert by_name["synthetic-hra"].uri == "s3://runs/synth/abc/lift-hra.json"
    assert by_name["synthetic-hra"].videos_root == "s3://runs/synth/abc"
    assert by_name["synthetic-hdvila"].source == "hd-vila" and by_name["synthetic-prompts"].format == "vbench-prompts"
    # Without synth outputs the placeholder cannot resolve: a clear error, not a path named "{synth}".
    with pytest.raises(SourceError, match="unresolved placeholder"):
        resolve_datasets(cfg, None)
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_datasets(load_config("configs/demo.yaml", ["data.datasets=[nope]"]), None)


def test_malformed_catalogs(tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text("datasets:\n  x: {uri: a.json, format: mp3}\n")
    with pytest.raises(SourceError, match="unknown format 'mp3'"):
        load_catalog(bad)
    bad.write_text("datasets:\n  x: {format: lift-hra}\n")
    with pytest.raises(SourceError, match="needs 'uri' and 'format'"):
        load_catalog(bad)
    with pytest.raises(SourceError, match="cannot read catalog"):
        load_catalog(tmp_path / "nope.yaml")
    bad.write_text("datasets: [a, b\n")
    with pytest.raises(SourceError, match="not valid YAML"):
        load_catalog(bad)
    bad.write_text("datasets: [a, b]\n")
    with pytest.raises(SourceError, match="expected a mapping"):
        load_catalog(bad)
