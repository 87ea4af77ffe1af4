"""The reader registry: data_catalog's readers arrive through the entry point, lift_core never imports it."""

from __future__ import annotations

import ast
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import lift_core
from lift_core.data import sources
from lift_core.data.catalog import load_catalog
from lift_core.data.sources import ReadResult, SourceError, read_source, reader_formats, register_reader

LIFT_CORE = Path(lift_core.__file__).resolve().parent


@pytest.fixture
def isolated_registry(monkeypatch):
    """The registry as the entry points fill it, restored after the test."""
    reader_formats()
    monkeypatch.setattr(sources, "_readers", dict(sources._readers))
    return sources._readers


def test_lift_core_never_imports_data_catalog():
    offenders = []
    for path in sorted(LIFT_CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(LIFT_CORE)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] == "data_catalog"]
    assert offenders == []


def test_data_catalog_readers_come_through_the_entry_point():
    from importlib.metadata import entry_points

    from data_catalog.readers import READERS

    declared = {ep.name: ep.value for ep in entry_points(group=sources.ENTRY_POINT_GROUP)}
    assert declared.get("data_catalog") == "data_catalog.readers:READERS", "reinstall: pip install --no-deps -e ."
    assert set(READERS) <= set(reader_formats())
    assert {"lift-hra", "lift-inference", "critic-output", "alignment", "vbench-prompts", "video-dir"} <= set(READERS)
    assert all(sources.reader_for(fmt) is READERS[fmt] for fmt in READERS)


def test_read_source_with_a_real_fixture(fixtures_dir):
    res = read_source("lift-inference", str(fixtures_dir / "lift-demo/test.json"), source="hd-vila")
    assert res.kind == "videos" and len(res.records) == 2 and res.rejects == []
    assert {r["source"] for r in res.records} == {"hd-vila"}
    with pytest.raises(SourceError, match="unknown format 'mp3'; expected one of .*lift-hra"):
        read_source("mp3", str(fixtures_dir / "lift-demo/test.json"))


def test_a_registered_reader_is_readable_and_catalogable(isolated_registry, tmp_path):
    def read_lines(uri: str, videos_root: str | None, source: str = "lines") -> ReadResult:
        text = Path(uri).read_text()
        return ReadResult("prompts", [{"caption": line, "source": source, "dimensions": []} for line in text.splitlines()])

    register_reader("lines", read_lines)
    register_reader("lines", read_lines)  # the same reader again is harmless
    src = tmp_path / "prompts.txt"
    src.write_text("a red circle\ntwo blue squares\n")
    assert [r["caption"] for r in read_source("lines", str(src)).records] == ["a red circle", "two blue squares"]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"datasets:\n  mine: {{uri: {src}, format: lines}}\n")
    assert load_catalog(catalog)["mine"].format == "lines"
    with pytest.raises(SourceError, match="'lines' from register_reader: a reader for it is already registered"):
        register_reader("lines", lambda uri, videos_root, source="x": ReadResult("prompts"))


def test_without_plugins_the_error_says_how_to_register(monkeypatch):
    monkeypatch.setattr(sources, "_readers", {})
    monkeypatch.setattr(sources, "_plugins_loaded", False)
    monkeypatch.setattr(sources, "entry_points", lambda group: [])
    with pytest.raises(SourceError, match="no readers are registered .*'lift.readers'.*pip install -e"):
        read_source("lift-hra", "x.json")


def test_a_plugin_must_name_a_mapping(monkeypatch):
    monkeypatch.setattr(sources, "_readers", {})
    monkeypatch.setattr(sources, "_plugins_loaded", False)
    bad = EntryPoint("broken", "json:loads", sources.ENTRY_POINT_GROUP)  # a function, not {format: reader}
    monkeypatch.setattr(sources, "entry_points", lambda group: [bad] if group == sources.ENTRY_POINT_GROUP else [])
    with pytest.raises(SourceError, match="entry point broken = 'json:loads'.*expected a mapping.*function"):
        reader_formats()
