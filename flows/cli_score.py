"""``lift score``: score videos with a critic adapter, resumable.

SRC is a manifest Parquet, a folder of videos with sidecar captions, or a LiFT inference JSON
(``test.json``) whose videos resolve next to it. SRC is read into a manifest, then the decode and
score stages of lift-full run on it under ``--work-dir`` (cached and resumable there), with the
adapter's own base model. The output is a copy of the stage's ``scores.parquet`` or, with
``--format lift-json``, LiFT's ``critic_output_*.json`` (the scores Parquet is kept beside it).
``--critic-backbone vila --critic-base VILA_DIR`` scores with LiFT's released critic (LiFT-Critic LoRA).

``lift import-scores``: LiFT's own JSON rewards (critic outputs, alignment input) as score rows.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

import typer

FORMATS = ("parquet", "lift-json")


# How a LiFT JSON says its format: the first entry that has one of these keys decides (entries that
# decide nothing, ``null`` or a dict of other keys, are looked past and rejected by the reader).
JSON_FORMAT_RULES = (
    ("lift-hra", lambda e: "conversations" in e),
    ("lift-inference", lambda e: "video" in e or "caption" in e),
)


def source_format(src: str, limits: Any = None) -> tuple[str, str | None]:
    """The reader for SRC (``manifest``, ``video-dir``, ``lift-inference`` or ``lift-hra``) and, for a
    JSON, which entry decided it (``"entry 3"``).

    A JSON is read as ``lift ingest`` reads it (``lift_core.data.inputs.load_json_list``: a BOM or an
    invalid byte in one entry does not fail the file).
    """
    from lift_core import storage
    from lift_core.data.inputs import deciding_entry, load_json_list

    fs, path = storage.fs_and_path(src)
    if not fs.exists(path):
        raise FileNotFoundError(f"--videos not found: {src}")
    if fs.isdir(path):
        return "video-dir", None
    if path.endswith(".parquet"):
        return "manifest", None
    if path.endswith(".json"):
        entries = load_json_list(src, limits)
        found = deciding_entry(entries, JSON_FORMAT_RULES)
        if found is None:
            raise ValueError(f"{src}: none of its {len(entries)} entries says which LiFT format it is (an entry with "
                             "'conversations' is LiFT-HRA; one with 'video' and 'caption' is LiFT's inference input)")
        return found[0], f"entry {found[1]}"
    raise ValueError(f"--videos {src}: expected a manifest .parquet, a folder of videos or a LiFT .json")


def detect_source_format(src: str, limits: Any = None) -> str:
    """The reader for SRC: ``manifest``, ``video-dir``, ``lift-inference`` or ``lift-hra`` (``source_format``)."""
    return source_format(src, limits)[0]


def _base(out: str) -> str:
    for ext in (".parquet", ".json"):
        if out.endswith(ext):
            return out[: -len(ext)]
    return out


def prepare_manifest(
    src: str, fmt: str, work_dir: str, limits: Any = None, split: Any = None,
) -> tuple[str, list[dict[str, Any]], dict[int, tuple[str, str]]]:
    """A manifest for SRC under ``work_dir``, the ingest rejects, and the (``video_id``, ``caption_id``)
    that each accepted entry of SRC is scored as (``source_pairs``).

    A SRC that is a manifest is checked row by row (``check_rows``: a row whose file holds another
    video than its ``video_id`` is a reject, with both ids) and copied with its relative URIs resolved
    (against its ``lift.uri_base``, else its own folder: ``lift_core.data.manifest``), so the decode
    stage's cache key names the files, not only the manifest's bytes.
    Other sources are ingested with the config's ``data.*`` bounds (``limits``) and ``split``; the
    manifest has one row per distinct (video, caption) of the accepted entries: the critic's prompts
    hold the caption, so two entries of one video with different captions are scored apart, and a copy
    of a video drops no entry.
    """
    from lift_core import storage
    from lift_core.critic.scoring import source_pairs
    from lift_core.data.ingest import ingest_source
    from lift_core.data.inputs import InputLimits
    from lift_core.data.manifest import check_rows, read_manifest, write_manifest
    from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table

    if fmt == "manifest":
        table = read_manifest(src)
        good, bad = check_rows(table, limits or InputLimits())
        if good.num_rows == 0:
            raise ValueError(f"no usable rows in {src}: " + (bad[0]["error"] if bad else "it is empty"))
        key = storage.hash_parts(storage.fingerprint_uri(src), table.column("uri").to_pylist())
        manifest = storage.join(work_dir, "score-inputs", key, "manifest.parquet")
        write_manifest(manifest, good)  # rewritten each run: which rows pass depends on the files now
        return manifest, bad, {}
    manifest = storage.join(work_dir, "score-inputs", storage.fingerprint_uri(src), "manifest.parquet")
    counts = ingest_source(fmt, src, manifest, split=split, limits=limits, every_entry_used=True)
    if counts.get("videos", 0) == 0:
        raise ValueError(f"no usable videos in {src} (see {_base(manifest)}.quarantine.parquet)")
    rejects = storage.read_table(f"{_base(manifest)}.quarantine.parquet").to_pylist()
    pairs, entry_keys = source_pairs(fmt, src, storage.read_table(manifest).to_pylist(), limits=limits)
    write_manifest(manifest, rows_to_table(pairs, MANIFEST_SCHEMA))
    return manifest, rejects, entry_keys


def score(
    videos: str = typer.Option(..., "--videos", help="manifest .parquet, folder of videos + sidecar captions, or LiFT .json"),
    critic: str = typer.Option(..., "--critic", help="critic PEFT adapter dir (its adapter_config.json names the base)"),
    critic_backbone: Optional[str] = typer.Option(
        None, "--critic-backbone", help="critic backbone (default: critic.backbone), e.g. vila for LiFT-Critic"),
    critic_base: Optional[str] = typer.Option(
        None, "--critic-base", help="base model dir or hub id (default: the adapter's recorded base, else critic.model)"),
    out: str = typer.Option(..., "--out", help="scores.parquet, or the .json to write with --format lift-json"),
    rationale: Optional[bool] = typer.Option(
        None, "--rationale/--no-rationale", help="generate reasons (default: on for lift-json, else score.rationale)"
    ),
    format: str = typer.Option("parquet", "--format", help="parquet or lift-json"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML (decode/score/ray sections)"),
    work_dir: Optional[str] = typer.Option(None, "--work-dir", help="where ingest, decode and score write (default: run_root)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Score videos with a critic: per-dimension probabilities, labels, continuous and LiFT rewards."""
    from lift_core import storage
    from lift_core.config import load_config
    from lift_core.critic.adapter_files import check_adapter
    from lift_core.critic.scoring import adapter_base_model, lift_critic_output
    from lift_core.data.inputs import InputLimits, load_json_list
    from lift_core.distributed.ray_runtime import ensure_ray
    from lift_core.progress import log_progress
    from lift_core.output_paths import Output, check_outputs, table_inputs
    from lift_core.schemas import QUARANTINE_SCHEMA, rows_to_table
    from tasks.stages import InlineStages

    if format not in FORMATS:
        raise ValueError(f"unknown --format {format!r}; expected one of: {', '.join(FORMATS)}")
    if not storage.exists(storage.join(critic, "adapter_config.json")):
        raise FileNotFoundError(f"--critic {critic}: not a PEFT adapter dir (no adapter_config.json)")
    check_adapter(critic)  # a damaged adapter is refused before any video is decoded
    src = storage.abspath_if_local(videos)
    out = storage.abspath_if_local(out)
    # Every file this command writes, checked against every input before any work starts.
    written = [Output("--out", out), Output("--out's quarantine", f"{_base(out)}.quarantine.parquet")]
    if format == "lift-json":
        written.append(Output("--out's scores", f"{_base(out)}.scores.parquet"))
    check_outputs(written, [*table_inputs("--videos", src), ("--critic", critic), ("--config", config),
                            ("--critic-base", critic_base if critic_base and storage.exists(critic_base) else None)])
    extra = [f"critic.backbone={critic_backbone}"] if critic_backbone else []
    cfg = load_config(config, [*(overrides or []), *extra])
    limits = InputLimits.from_config(cfg.data)  # the same data.* bounds as lift ingest and the ingest stage
    fmt, decided_by = source_format(src, limits)
    critic = storage.abspath_if_local(critic)
    want_reasons = rationale if rationale is not None else (format == "lift-json" or cfg.score.rationale)
    # Everything in SRC is scored (the pipeline's source filter does not apply here), by --critic-base,
    # else the base model the adapter was trained on, else (LiFT's adapters record none) critic.model.
    if critic_base:
        base = storage.abspath_if_local(critic_base) if storage.exists(critic_base) else critic_base
    else:
        base = adapter_base_model(critic, default=cfg.critic.model)
    cfg = cfg.model_copy(update={
        "run_root": storage.abspath_if_local(work_dir or cfg.run_root),
        "score": cfg.score.model_copy(update={"sources": None, "rationale": want_reasons}),
        "critic": cfg.critic.model_copy(update={"model": base, "build_tiny": None}),
    })

    manifest, rejects, entry_keys = prepare_manifest(src, fmt, cfg.run_root, limits, cfg.data.split)
    ensure_ray(cfg.ray)
    run = InlineStages(cfg, progress=log_progress)
    decoded = run.decode(manifest)
    scored = run.score([manifest], [decoded["outputs"]["frames"]], critic)
    scores_uri = out if format == "parquet" else f"{_base(out)}.scores.parquet"
    storage.write_bytes_atomic(scores_uri, storage.read_bytes(scored["outputs"]["scores"]))

    quarantine = [*rejects, *(r for stage in (decoded, scored)
                              for r in storage.read_table(stage["outputs"]["quarantine"]).to_pylist())]
    quarantine_uri = f"{_base(out)}.quarantine.parquet"
    storage.write_table(quarantine_uri, rows_to_table(quarantine, QUARANTINE_SCHEMA))
    critic_id = scored["metrics"]["critic_id"]
    summary: dict[str, Any] = {"scores": scores_uri, "critic_id": critic_id, **scored["counts"],
                               "quarantined": len(quarantine), "quarantine": quarantine_uri,
                               "stage_dir": scored["out_uri"], "source_format": fmt}
    if decided_by:
        summary["source_format_decided_by"] = decided_by
    if format == "lift-json":
        rows = storage.read_table(scores_uri).to_pylist()
        rows = [r for r in rows if r["critic_id"] == critic_id]
        # Decoded as the reader decodes it: an undecodable entry was rejected, the rest are kept as is.
        lift_entries = load_json_list(src, limits) if fmt == "lift-inference" else None
        # Each entry gets the scores of its own (video, caption); a rejected or unscored one is missing.
        entries, missing = lift_critic_output(rows, lift_entries, entry_keys)
        text = json.dumps(entries, ensure_ascii=False, indent=4)
        storage.write_bytes_atomic(out, text.encode("utf-8", "backslashreplace"))
        summary.update({"json": out, "json_entries": len(entries), "json_missing": missing})
        for video in missing:
            typer.echo(f"lift: warning: {video}: not scored (see {quarantine_uri})", err=True)
    if quarantine:
        first = quarantine[0]
        typer.echo(f"lift: warning: {len(quarantine)} input(s) quarantined, e.g. {first['uri']}: {first['error']} "
                   f"(all in {quarantine_uri})", err=True)
    typer.echo(json.dumps(summary, indent=2))


def import_scores(
    file: str = typer.Argument(..., help="LiFT JSON: critic_output_*.json (critic-output) or alignment input (alignment)"),
    format: str = typer.Option(..., "--format", help="critic-output or alignment"),
    out: str = typer.Option(..., "--out", help="scores.parquet to write (a manifest and a quarantine go beside it)"),
    videos_root: Optional[str] = typer.Option(None, "--videos-root", help="where relative video paths resolve "
                                              "(default: the JSON's folder)"),
    source: str = typer.Option("generated", "--source", help="the rows' source (align uses generated videos)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML (critic.label_values, "
                                         "score.lift_values)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """LiFT's own rewards as scores.parquet rows, for `lift align --scores` in place of our critic's."""
    from lift_core import storage
    from lift_core.config import load_config
    from lift_core.critic.import_scores import import_scores as run_import
    from lift_core.data.inputs import InputLimits
    from lift_core.output_paths import Output, check_outputs

    cfg = load_config(config, overrides)
    src = storage.abspath_if_local(file)
    if not storage.exists(src):
        raise FileNotFoundError(f"not found: {file}")
    base = out[: -len(".parquet")] if out.endswith(".parquet") else out
    check_outputs([Output("--out", out), Output("--out's manifest", f"{base}.manifest.parquet"),
                   Output("--out's quarantine", f"{base}.quarantine.parquet")],
                  [("FILE", src), ("--videos-root", videos_root), ("--config", config)])
    summary = run_import(format, src, storage.abspath_if_local(out),
                         videos_root=storage.abspath_if_local(videos_root) if videos_root else None,
                         source=source, critic=cfg.critic, score=cfg.score, limits=InputLimits.from_config(cfg.data))
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    app.command("score")(score)
    app.command("import-scores")(import_scores)


__all__ = ["register", "score", "import_scores", "detect_source_format", "source_format"]
