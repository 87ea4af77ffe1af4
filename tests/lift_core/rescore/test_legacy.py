"""A store of the old Parquet format becomes the Delta tables, automatically or by command, with no row lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from legacy_store import T0, score_row, write_legacy_store

from lift_core.rescore import legacy
from lift_core.rescore.store import ScoresStore
from lift_core.schemas import caption_id


def _scores(st: ScoresStore) -> dict[tuple, float]:
    return {(r["video_id"], r["caption_id"], r["critic_id"]): r["reward"] for r in st.read_scores(dedup=False).to_pylist()}


def _check_migrated(st: ScoresStore, want: dict) -> None:
    assert _scores(st) == want["scores"]  # what the old reader returned, row for row
    assert st.read_quarantine().num_rows == want["quarantine"]
    assert st.read_index() == want["index"]
    assert st.scored_pairs() == want["scored_pairs"]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_an_old_store_is_converted_on_first_use(tmp_path):
    root = tmp_path / "store"
    want = write_legacy_store(str(root))
    old_files = _files(root)
    st = ScoresStore(str(root))
    _check_migrated(st, want)
    m = st.migration
    assert m["migrated"] and m["tables"]["scores"] == {"parts": 4, "rows_read": 7, "rows": 6, "inserted": 6,
                                                       "version": 1}
    assert m["tables"]["quarantine"]["rows"] == 3 and m["tables"]["index"]["rows"] == 3
    # Nothing is deleted: every old file (the killed writer's temp file and the stale lock too) is
    # under _legacy/, the run summaries stay where they were.
    moved = {f for f in old_files if not f.startswith("_runs/")}
    assert {f"_legacy/{f}" for f in moved} <= _files(root) and "_runs/r1.json" in _files(root)
    assert not any((root / d).exists() for d in ("scores", "quarantine", "_index", "_locks"))
    hist = st.history()
    assert hist[0]["lift"] == {"operation": "migrate-parquet", "legacy_parts": 4, "legacy_rows": 7}

    # Converted once: the next use reads the tables only.
    again = ScoresStore(str(root))
    _check_migrated(again, want)
    assert again.migration is None and again.version() == 1
    # New scores go into the table; an old key keeps its old score.
    again.append_scores([score_row("a", "c1", 0.99, T0), score_row("z", "c1", 0.5, T0)], "r9", 1)
    got = _scores(again)
    assert len(got) == 7 and got[("a", caption_id("a red ball"), "c1")] == 0.1


def test_a_migration_that_died_half_way_is_finished_by_the_next(tmp_path, monkeypatch):
    root = tmp_path / "store"
    want = write_legacy_store(str(root))

    def die(*_a, **_k):
        raise OSError("killed while moving the old files")

    with monkeypatch.context() as m:
        m.setattr(legacy, "_move_tree", die)
        with pytest.raises(OSError, match="killed"):
            legacy.migrate(ScoresStore(str(root), migrate=False))
    assert (root / "scores").exists()  # the tables hold the rows, the old parts are still there
    st = ScoresStore(str(root))
    _check_migrated(st, want)
    assert st.migration["tables"]["scores"]["inserted"] == 0  # merged again: nothing twice
    assert not (root / "scores").exists()


def test_a_missing_key_leaves_the_old_files_alone(tmp_path, monkeypatch):
    root = tmp_path / "store"
    write_legacy_store(str(root))
    st = ScoresStore(str(root), migrate=False)
    real = st.scores.merge

    def lossy(rows, meta=None):  # a MERGE that drops a row: the check must catch it
        return real(rows.slice(1), meta)

    monkeypatch.setattr(st.scores, "merge", lossy)
    with pytest.raises(RuntimeError, match="left 1 key"):
        legacy.migrate(st)
    assert len(list((root / "scores").rglob("part-*.parquet"))) == 4 and not (root / "_legacy").exists()
