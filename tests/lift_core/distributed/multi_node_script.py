"""Run by test_multi_node.py in a fresh process: critic training and scoring on a two-node Ray cluster.

The parent gives this process its environment: ``s3://`` points at a moto server (``FSSPEC_S3_ENDPOINT_URL``
and credentials), ``TMPDIR``/``RAY_TMPDIR`` are a private folder (Ray's session files, its
``ray_current_cluster`` address file and Ray Train's ``storage_path``, ``$TMPDIR/lift-ray-train``, all
live there, so no other Ray user on the machine sees this cluster), and every Ray process binds to
loopback. Steps, each timed:

1. inputs on S3: a tiny critic base (local, as a hub model would be), 12 rated synthetic videos
   (manifest + two frames shards) under ``s3://lift/inputs``;
2. reference: the same training plan, uninterrupted, in this one process (``run_worker``: one node,
   one worker, no Ray), into a local folder;
3. a cluster of two nodes (``ray.cluster_utils.Cluster``): a head and a worker node, 3 CPUs each;
   a training worker reserves 2 CPUs (``critic.cpus_per_worker``), so the 2 workers go one per node;
4. ``run_train_critic`` with ``run_root=s3://lift/run``, ``ray.address`` = the cluster (the attach path
   of a real cluster), ``critic.max_failures=1``: at the first checkpoint (step 3) the worker on the
   worker node waits; once the checkpoint is on S3 the worker node is removed (``cluster.remove_node``:
   its raylet and every process on it killed) and a fresh node added; Ray Train restarts the group,
   which resumes from the checkpoint on S3;
5. ``run_score`` with 2 actors of 2 CPUs each, so one per node; each actor records its node.

Prints ``REPORT <json>``: what the parent asserts on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
MAX_STEPS, CHECKPOINT_EVERY = 8, 3
NODE_CPUS, WORKER_CPUS = 3, 2  # two workers (or actors) of 2 CPUs never fit one 3-CPU node
OBJECT_STORE = 100 * 1024 * 1024


def critic_fixtures():
    """tests/lift_core/critic/conftest.py (tiny critic sizes, rated synthetic videos, the train config)."""
    if "vila_fixtures" not in sys.modules:  # the conftest imports it by name, as pytest's rootdir import allows
        vila = importlib.util.spec_from_file_location("vila_fixtures", REPO / "tests/lift_core/critic/vila_fixtures.py")
        sys.modules["vila_fixtures"] = importlib.util.module_from_spec(vila)
        vila.loader.exec_module(sys.modules["vila_fixtures"])
    spec = importlib.util.spec_from_file_location("critic_fixtures", REPO / "tests/lift_core/critic/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def newest_checkpoint(out: str):
    """``latest_checkpoint(out)`` as it is on S3 now: s3fs caches folder listings in this long-lived
    process, and a cached listing still names checkpoints that were deleted since (keep_checkpoints)."""
    from lift_core import storage
    from lift_core.train import latest_checkpoint

    storage.fs_and_path(out)[0].invalidate_cache()
    return latest_checkpoint(out)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# Defined in this script (``__main__``), so Ray pickles them by value into the workers and actors.
from lift_core.train import Callback


class NodeProbe(Callback):
    """Records each worker's rank and node at (re)start; the worker on ``victim`` waits at the first
    checkpoint (once) until the parent kills its node."""

    def __init__(self, records: str, victim: str, wait_at: int, wait_s: float):
        self.records, self.victim, self.wait_at, self.wait_s = records, victim, wait_at, wait_s

    def on_train_start(self, ctx, start_step: int) -> None:
        write_json(Path(self.records) / f"start-{os.getpid()}.json",
                   {"rank": ctx.rank, "world": ctx.world, "node": node_id(), "pid": os.getpid(),
                    "start_step": start_step, "t": time.time()})

    def on_checkpoint(self, ctx, step: int, uri) -> None:
        marker = Path(self.records) / "waiting-for-kill"
        if step == self.wait_at and node_id() == self.victim and not marker.exists():
            write_json(marker, {"rank": ctx.rank, "step": step, "pid": os.getpid(), "t": time.time()})
            time.sleep(self.wait_s)  # the node is removed meanwhile; if not, training goes on and the test fails


def recording_scorer(records: str):
    """``CriticScorer`` that records its node at start and the rows of each batch it scores."""
    from lift_core.critic.scoring import CriticScorer

    class NodeRecordingScorer(CriticScorer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._record = Path(records) / f"actor-{os.getpid()}.json"
            self._rows = 0
            write_json(self._record, {"node": node_id(), "pid": os.getpid(), "rows": 0})

        def __call__(self, batch):
            out = super().__call__(batch)
            self._rows += out.num_rows
            write_json(self._record, {"node": node_id(), "pid": os.getpid(), "rows": self._rows})
            return out

    return NodeRecordingScorer


def main() -> None:
    work = Path(sys.argv[1])
    report: dict = {"timings": {}}
    t_start = time.perf_counter()

    def lap(name: str, t0: float) -> None:
        report["timings"][name] = round(time.perf_counter() - t0, 1)

    from lift_core import storage
    from lift_core.config import DIMENSIONS, RayConfig, TinyCriticConfig
    from lift_core.critic import train_stage
    from lift_core.critic.builder import build_tiny_critic
    from lift_core.critic.train import CriticLoraRecipe
    from lift_core.distributed.ray_runtime import ensure_ray
    from lift_core.metrics.agreement import agreement_from_predictions
    from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
    from lift_core.train import latest_checkpoint, run_worker
    from lift_core.video.frames import frames_table

    fx = critic_fixtures()

    # 1. inputs
    t0 = time.perf_counter()
    base = build_tiny_critic(str(work / "critic-base"), TinyCriticConfig(**fx.TINY))
    manifest_rows, frame_rows = fx.render_rated(12)
    manifest_uri, frames_uri = "s3://lift/inputs/manifest.parquet", "s3://lift/inputs/frames"
    storage.write_table(manifest_uri, rows_to_table(manifest_rows, MANIFEST_SCHEMA))
    storage.write_table(f"{frames_uri}/part-00000.parquet", frames_table(frame_rows[:6]))
    storage.write_table(f"{frames_uri}/part-00001.parquet", frames_table(frame_rows[6:]))
    train_section = {"num_workers": 2, "batch_size": 4, "max_steps": MAX_STEPS, "lr": 0.005, "warmup_steps": 1,
                     "checkpoint_every": CHECKPOINT_EVERY, "seed": 0}
    cfg = fx.train_config("s3://lift/run", model=base, build_tiny=None, train=train_section,
                          cpus_per_worker=WORKER_CPUS, max_failures=1)
    cfg = cfg.model_copy(update={"score": cfg.score.model_copy(update={
        "num_actors": 2, "num_cpus_per_actor": WORKER_CPUS, "batch_size": 2, "rows_per_shard": 1})})
    lap("inputs", t0)

    # 2. the single-node reference: the same plan, uninterrupted, in this process
    t0 = time.perf_counter()
    plan = train_stage.plan_training(cfg, manifest_uri, frames_uri)
    ref = work / "reference"
    run_worker(CriticLoraRecipe(), dict(plan.config, out_uri=str(ref), adapter_uri=str(ref / "adapter"),
                                        predictions_uri=str(ref / "predictions.parquet")))
    ref_preds = storage.read_table(str(ref / "predictions.parquet")).to_pylist()
    train_labels = {d: [e["label"] for e in plan.train if e["dimension"] == d] for d in DIMENSIONS}
    report["reference"] = {
        "train_log": storage.read_table(str(ref / "train_log.parquet")).to_pylist(),
        "predictions": ref_preds,
        "metrics": agreement_from_predictions(ref_preds, "test", train_labels, cfg.critic.label_values),
    }
    lap("reference", t0)

    # 3. the cluster
    t0 = time.perf_counter()
    import ray
    from ray.cluster_utils import Cluster

    node_args = {"num_cpus": NODE_CPUS, "object_store_memory": OBJECT_STORE}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    worker_node = cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    report["cluster"] = {"address": cluster.address, "head": cluster.head_node.node_id,
                         "worker": worker_node.node_id}
    lap("cluster", t0)

    try:
        # 4. training on both nodes, the worker node killed after the first checkpoint
        t0 = time.perf_counter()
        cfg = cfg.model_copy(update={"ray": RayConfig(address=cluster.address)})
        records = work / "records"
        records.mkdir()
        _, out = train_stage.stage_out(cfg, manifest_uri, frames_uri)
        ensure_ray(cfg.ray)  # attaches to ray.address, as a driver of a real cluster does
        events: dict = {}
        trained: dict = {}

        def train() -> None:  # in a thread: nodes are added from the main thread (Ray sets signal handlers)
            try:
                trained["result"] = train_stage.run_train_critic(cfg, manifest_uri, frames_uri, callbacks=[probe])
            except BaseException as err:  # noqa: BLE001  (re-raised in the main thread)
                trained["error"] = err

        probe = NodeProbe(str(records), worker_node.node_id, CHECKPOINT_EVERY, 180.0)
        trainer = threading.Thread(target=train, daemon=True)
        trainer.start()
        deadline = time.time() + 240
        while trainer.is_alive() and time.time() < deadline:
            ck = newest_checkpoint(out)
            if ck is not None and (records / "waiting-for-kill").exists():
                events["checkpoint_before_kill"] = ck[0]
                cluster.remove_node(worker_node)  # its raylet and every process on it killed
                events["removed"] = worker_node.node_id
                events["added"] = cluster.add_node(**node_args).node_id
                break
            time.sleep(0.5)
        else:
            events["error"] = "training ended, or no checkpoint and no waiting worker within 240 s"
        trainer.join(timeout=400)
        if "error" in trained:
            raise trained["error"]
        result = trained["result"]
        starts = sorted((json.loads(p.read_text()) for p in records.glob("start-*.json")), key=lambda r: r["t"])
        report["training"] = {
            "events": events,
            "starts": starts,
            "waited": (json.loads((records / "waiting-for-kill").read_text())
                       if (records / "waiting-for-kill").exists() else None),
            "counts": result.counts,
            "out": result.out_uri if hasattr(result, "out_uri") else out,
            "outputs": result.outputs,
            "metrics": json.loads(storage.read_text(result.outputs["metrics"])),
            "train_log": storage.read_table(result.outputs["train_log"]).to_pylist(),
            "predictions": storage.read_table(result.outputs["predictions"]).to_pylist(),
            "last_checkpoint_cached_listing": latest_checkpoint(out),  # before the refresh: a stale listing
            "last_checkpoint": newest_checkpoint(out),
        }
        lap("training", t0)

        # 5. scoring with one actor per node
        t0 = time.perf_counter()
        import lift_core.critic.scoring as scoring_mod

        actors = work / "actors"
        actors.mkdir()
        scoring_mod.CriticScorer = recording_scorer(str(actors))
        from lift_core.critic.score_stage import run_score

        scored = run_score(cfg, [manifest_uri], [frames_uri], result.outputs["adapter"])
        scores = storage.read_table(scored.outputs["scores"]).to_pylist()
        report["scoring"] = {
            "counts": scored.counts,
            "scores_uri": scored.outputs["scores"],
            "keys": [[r["video_id"], r["caption_id"], r["critic_id"]] for r in scores],
            "manifest_video_ids": [r["video_id"] for r in manifest_rows],
            "actors": [json.loads(p.read_text()) for p in sorted(actors.glob("actor-*.json"))],
            "nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]],
        }
        lap("scoring", t0)
    finally:
        ray.shutdown()
        cluster.shutdown()
    report["timings"]["total"] = round(time.perf_counter() - t_start, 1)
    print("REPORT " + json.dumps(report, default=str))


if __name__ == "__main__":
    main()
