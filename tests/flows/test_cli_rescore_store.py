"""``lift rescore-store``: the scores store's versions, compaction and vacuum by command."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from lift_core.rescore import ScoresStore


def write_legacy_store(root: str) -> dict:
    """``tests/lift_core/rescore/legacy_store.py``'s writer of the old store format (loaded once, by name)."""
    if "legacy_store" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "lift_core" / "rescore" / "legacy_store.py"
        spec = importlib.util.spec_from_file_location("legacy_store", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["legacy_store"] = module
        spec.loader.exec_module(module)
    return sys.modules["legacy_store"].write_legacy_store(root)


def _fill(store: str, batches: int) -> ScoresStore:
    st = ScoresStore(store)
    at = datetime(2026, 3, 4, tzinfo=timezone.utc)
    for i in range(batches):
        st.append_scores([{"video_id": f"v{i}", "critic_id": "c1", "caption": "c", "reward": i / 10, "scored_at": at}],
                         f"run-{i}", 1)
    return st


def test_history_compact_and_vacuum(tmp_path, lift_cli):
    store = str(tmp_path / "store")
    st = _fill(store, 4)
    rows = st.read_scores().to_pylist()

    code, out, err = lift_cli("rescore-store", "history", "--store", store, "--limit", "2")
    assert code == 0, err
    hist = json.loads(out)
    assert [h["version"] for h in hist] == [4, 3] and hist[0]["operation"] == "MERGE"
    assert hist[0]["lift"]["run_id"] == "run-3" and hist[0]["rows_inserted"] == 1

    code, out, err = lift_cli("rescore-store", "compact", "--store", store, "--no-vacuum")
    assert code == 0, err
    done = json.loads(out)
    assert done["files_before"]["scores"] == 4 and done["files_after"]["scores"] == 1 and "vacuumed" not in done
    data = tmp_path / "store/delta/scores"
    assert len(list(data.rglob("*.parquet"))) == 5  # the 4 small files stay until VACUUM: older versions read them
    assert ScoresStore(store).read_scores(version=4).to_pylist() == rows

    code, out, _ = lift_cli("rescore-store", "vacuum", "--store", store, "--retention-hours", "0", "--dry-run")
    assert code == 0 and len(json.loads(out)["files"]["scores"]) == 4
    assert len(list(data.rglob("*.parquet"))) == 5  # a dry run deletes nothing
    code, out, _ = lift_cli("rescore-store", "vacuum", "--store", store, "--retention-hours", "0")
    assert code == 0 and len(json.loads(out)["files"]["scores"]) == 4
    assert len(list(data.rglob("*.parquet"))) == 1
    assert ScoresStore(store).read_scores().to_pylist() == rows

    code, out, err = lift_cli("rescore-store", "compact", "--store", store, "--retention-hours", "0")
    assert code == 0 and json.loads(out)["compacted"]["scores"]["numFilesAdded"] == 0  # nothing left to compact
    ops = [h["operation"] for h in json.loads(lift_cli("rescore-store", "history", "--store", store)[1])]
    # newest first: the vacuums, the one OPTIMIZE (the second compact had nothing to do), the MERGEs
    assert ops[0] == "VACUUM END" and ops.count("OPTIMIZE") == 1 and ops[-5:] == ["MERGE"] * 4 + ["CREATE TABLE"]
    assert ops.index("OPTIMIZE") == len(ops) - 6


def test_store_from_the_config_and_a_bad_table(tmp_path, lift_cli):
    _fill(str(tmp_path / "run/scores_store"), 1)
    code, out, err = lift_cli("rescore-store", "history", f"run_root={tmp_path / 'run'}")
    assert code == 0, err
    assert len(json.loads(out)) == 2  # rescore.store defaults to {run_root}/scores_store: create, one MERGE
    code, _, err = lift_cli("rescore-store", "history", "--store", str(tmp_path), "--table", "nope")
    assert code == 2 and "expected scores, quarantine or index" in err


def test_migrate_by_command_then_nothing_to_do(tmp_path, lift_cli):
    root = tmp_path / "store"
    want = write_legacy_store(str(root))
    code, out, err = lift_cli("rescore-store", "migrate", "--store", str(root))
    assert code == 0, err
    report = json.loads(out)
    assert report["migrated"] and report["tables"]["scores"]["inserted"] == 6
    assert report["files_moved"] == {"scores": 5, "quarantine": 1, "_index": 2, "_locks": 1}
    st = ScoresStore(str(root), migrate=False)
    got = {(r["video_id"], r["caption_id"], r["critic_id"]): r["reward"] for r in st.read_scores().to_pylist()}
    assert got == want["scores"] and st.read_index() == want["index"] and st.scored_pairs() == want["scored_pairs"]
    code, out, _ = lift_cli("rescore-store", "migrate", "--store", str(root))
    assert code == 0 and json.loads(out)["migrated"] is False
