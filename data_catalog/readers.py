"""Readers: each source format -> records of the manifest (or prompt) contract, plus rejects.

A reader never drops an entry silently: every malformed entry becomes a ``Reject`` with the file,
the entry index and the reason. Video bytes are not read here; the ingest stage hashes them.

One entry never takes its file down:

- JSON is read through ``lift_core.data.inputs.load_json_list``, the one tolerant path every command
  uses: a regular file within ``data.max_json_bytes``, decoded per entry. An invalid UTF-8 byte (kept
  as a lone surrogate, ``surrogateescape``), a lone ``\ud800`` escape, an entry nested too deeply
  (``RecursionError``) or a caption that is not a string rejects that entry only.
- A caption over ``max_caption_chars`` (``data.max_caption_chars``) is rejected.
- A relative video path resolves under its root (``videos_root``, else the JSON's folder; a local root
  is made absolute, so records never depend on the working directory). One that leaves it
  (``../../etc/passwd``), or a symlink under it that resolves outside it, is rejected and never
  opened. Absolute paths and URLs, which LiFT's own files use, are allowed and counted
  (``ReadResult.absolute_paths``). A path with a NUL byte is rejected as one entry.

``READERS`` reaches ``lift_core``'s reader registry (``lift_core.data.sources``) through the
``lift.readers`` entry point in pyproject.toml, so ``lift_core`` never imports this package.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any, Callable

from lift_core import storage
from lift_core.data.inputs import InputLimits, load_json_list, load_json_value, usable
from lift_core.data.sources import (
    DEFAULT_MAX_CAPTION_CHARS,
    VIDEO_EXTENSIONS,
    Reader,
    ReadResult,
    Reject,
    SourceError,
    require_text,
    text_problem,
)
from lift_core.domain import CRITIC_OUTPUT_KEYS, DIMENSIONS, QUESTIONS, dimension_of_question, parse_label_answer


def _json_root(uri: str, videos_root: str | None) -> str:
    """Where a JSON source's relative video paths resolve: ``videos_root``, else the JSON's folder.

    A local root is made absolute, so the records (and the manifest) never depend on the working
    directory of a later command."""
    if videos_root is not None:
        return storage.abspath_if_local(videos_root)
    return storage.abspath_if_local(uri.rsplit("/", 1)[0] if "/" in uri else ".")


def _limits(limits: InputLimits | None, max_caption_chars: int | None) -> InputLimits:
    """The bounds a reader applies: ``limits`` (``read_source`` passes the config's), else the defaults
    with ``max_caption_chars``."""
    return limits if limits is not None else InputLimits(max_caption_chars=max_caption_chars)


def _outside(root: str, path: str) -> str | None:
    """Where ``path`` really is when a symlink takes it out of the local folder ``root``; else None."""
    if storage.local_path(root) is None:
        return None
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return None if real == real_root or real.startswith(real_root.rstrip("/") + "/") else real


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_absolute(video: str) -> bool:
    """An absolute local path or a URL (``s3://...``): used as is, not under a root."""
    return video.startswith("/") or bool(_URL.match(video))


def _resolve(videos_root: str | None, video: Any) -> str:
    """``video`` under ``videos_root``; ValueError when it is not a path or a relative one leaves the root."""
    video = require_text(video, "video path")
    if "\x00" in video:  # no file system takes it: this entry's problem, never the whole source's
        raise ValueError(f"video path {storage.safe_repr(video)} contains a NUL byte")
    if is_absolute(video):
        return video
    rel = posixpath.normpath(video)
    if rel == ".." or rel.startswith("../") or rel == ".":
        where = videos_root or "the working directory"
        raise ValueError(f"video path {video!r} leaves its root {where} (relative paths must stay under it)")
    if not videos_root:
        return rel
    path = storage.join(videos_root, rel)
    # Contained like a path: a symlink under the root that points out of it is refused too.
    if real := _outside(videos_root, path):
        raise ValueError(f"video path {video!r} is a symlink (or under one) that resolves to {real}, outside its "
                         f"root {videos_root}")
    return path


def _finish(out: ReadResult, absolute: set[str]) -> ReadResult:
    out.absolute_paths = sum(1 for rec in out.records if rec["uri"] in absolute)
    return out


def _empty_video_record(video: str, caption: str, source: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"uri": video, "caption": caption, "source": source}
    for d in DIMENSIONS:
        rec[f"label_{d}"] = None
        rec[f"reason_{d}"] = None
    return rec


def split_lift_prompt(human: str) -> tuple[str, str]:
    """``"<video>\n <caption> <question>"`` -> (caption, dimension); ValueError when no question matches."""
    dim = dimension_of_question(human)
    if dim is None:
        raise ValueError("the question matches none of LiFT's three questions")
    flat = " ".join(human.replace("<video>", " ", 1).split())
    question = " ".join(QUESTIONS[dim].split())
    caption = flat[: flat.find(question)].strip() if question in flat else flat
    return caption, dim


def read_lift_hra(
    uri: str, videos_root: str | None, source: str = "lift-hra", *,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS, limits: InputLimits | None = None,
) -> ReadResult:
    """LLaVA conversation JSON (LiFT-HRA, VIDGEN): one entry per (video, question) -> one row per video.

    The question's text gives the dimension; the answer's first word the label (``Good``, ``Normal``
    or ``Bad``; anything else rejects the entry), the rest the reason. A second rating of the same
    video and dimension, or a different caption for the same video, is rejected, never merged.
    """
    limits = _limits(limits, max_caption_chars)
    max_caption_chars = limits.max_caption_chars
    root = _json_root(uri, videos_root)
    out = ReadResult("videos")
    by_video: dict[str, dict[str, Any]] = {}
    absolute: set[str] = set()
    for i, entry in enumerate(load_json_list(uri, limits)):
        try:
            entry = usable(entry)
            if not isinstance(entry, dict) or not isinstance(entry.get("video"), str):
                raise ValueError("entry needs a string 'video'")
            video = _resolve(root, entry["video"])
            conv = entry.get("conversations")
            if not isinstance(conv, list):
                raise ValueError("entry needs a 'conversations' list")
            human = [c.get("value") for c in conv if isinstance(c, dict) and c.get("from") == "human"]
            answer = [c.get("value") for c in conv if isinstance(c, dict) and c.get("from") == "gpt"]
            if len(human) != 1 or len(answer) != 1 or not all(isinstance(v, str) for v in human + answer):
                raise ValueError("conversations need exactly one 'human' and one 'gpt' turn with text")
            caption, dim = split_lift_prompt(human[0])
            if not caption:
                raise ValueError("empty caption before the question")
            require_text(caption, "caption", max_caption_chars)
            label, reason = parse_label_answer(answer[0])
            if reason:
                require_text(reason, "answer")
            rec = by_video.get(video)
            if rec is not None and rec["caption"] != caption:
                raise ValueError(f"caption differs from an earlier entry of {entry['video']}")
            if rec is not None and rec[f"label_{dim}"] is not None:
                raise ValueError(f"second {dim} rating of {entry['video']}")
        except ValueError as err:
            out.rejects.append(Reject(uri, i, str(err)))
            continue
        rec = by_video.setdefault(video, _empty_video_record(video, caption, source))
        rec[f"label_{dim}"], rec[f"reason_{dim}"] = label, reason
        out.ratings += 1
        if is_absolute(entry["video"]):
            absolute.add(video)
    out.records = list(by_video.values())
    return _finish(out, absolute)


def _video_entry(entry: Any, root: str, max_caption_chars: int | None) -> tuple[str, str]:
    """(resolved video, caption) of a ``{video, caption, ...}`` entry; ValueError with the reason."""
    if not isinstance(entry, dict) or not isinstance(entry.get("video"), str) or not entry.get("caption"):
        raise ValueError("entry needs string 'video' and non-empty 'caption'")
    return _resolve(root, entry["video"]), require_text(entry["caption"], "caption", max_caption_chars)


def _read_video_entries(uri: str, videos_root: str | None, source: str, limits: InputLimits,
                        fill: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
                        ratings_per_entry: int = 0) -> ReadResult:
    """Each ``{video, caption, ...}`` entry of a LiFT JSON list as a video record; videos resolve next to the
    file (or under ``videos_root``). ``fill(entry, record)`` adds a format's own fields and raises
    ``ValueError`` to reject the entry with its reason."""
    root = _json_root(uri, videos_root)
    out = ReadResult("videos")
    absolute: set[str] = set()
    for i, entry in enumerate(load_json_list(uri, limits)):
        try:
            entry = usable(entry)
            video, caption = _video_entry(entry, root, limits.max_caption_chars)
            rec = _empty_video_record(video, caption, source)
            if fill is not None:
                fill(entry, rec)
        except ValueError as err:
            out.rejects.append(Reject(uri, i, str(err)))
            continue
        out.records.append(rec)
        out.ratings += ratings_per_entry
        if is_absolute(entry["video"]):
            absolute.add(video)
    return _finish(out, absolute)


def read_lift_inference(
    uri: str, videos_root: str | None, source: str = "lift-inference", *,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS, limits: InputLimits | None = None,
) -> ReadResult:
    """LiFT's inference input (test.json): ``[{video_id, video, caption}]``; videos resolve next to it."""
    return _read_video_entries(uri, videos_root, source, _limits(limits, max_caption_chars))


def _critic_answers(entry: dict[str, Any], rec: dict[str, Any]) -> None:
    for dim, key in CRITIC_OUTPUT_KEYS.items():
        if not isinstance(entry.get(key), str):
            raise ValueError(f"missing answer {key!r}")
        require_text(entry[key], f"answer {key!r}")
        rec[f"label_{dim}"], rec[f"reason_{dim}"] = parse_label_answer(entry[key])


def read_critic_output(
    uri: str, videos_root: str | None, source: str = "critic-output", *,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS, limits: InputLimits | None = None,
) -> ReadResult:
    """LiFT's critic_output_*.json: inference entries plus ``"Label. reason"`` per dimension."""
    return _read_video_entries(uri, videos_root, source, _limits(limits, max_caption_chars), _critic_answers,
                               ratings_per_entry=len(CRITIC_OUTPUT_KEYS))


def _alignment_score(entry: dict[str, Any], rec: dict[str, Any]) -> None:
    raw = entry.get("score")
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"score {raw!r} is not a number")
    try:
        score = float(raw)
    except ValueError:
        raise ValueError(f"score {raw!r} is not a number") from None
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score {score} outside [0, 1]")
    rec["score"] = score


def read_alignment(
    uri: str, videos_root: str | None, source: str = "alignment", *,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS, limits: InputLimits | None = None,
) -> ReadResult:
    """LiFT's alignment input ``[{video, caption, score}]``; ``score`` must be a number in [0, 1].

    The score stays on the reader's records (``record["score"]``) but is not a manifest column: the
    pipeline's own critic scores every video in the score stage, and the file's score becomes the reward
    with ``align.reward_source: file`` or ``lift import-scores --format alignment``
    (``lift_core.critic.import_scores``).
    """
    return _read_video_entries(uri, videos_root, source, _limits(limits, max_caption_chars), _alignment_score)


def read_vbench_prompts(
    uri: str, videos_root: str | None = None, source: str = "vbench", *,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS, limits: InputLimits | None = None,
) -> ReadResult:
    """VBench's prompt suite: ``[{prompt_en, dimension: [...], prompt_opt?}]``."""
    limits = _limits(limits, max_caption_chars)
    max_caption_chars = limits.max_caption_chars
    out = ReadResult("prompts")
    for i, entry in enumerate(load_json_list(uri, limits)):
        try:
            entry = usable(entry)
            if not isinstance(entry, dict) or not entry.get("prompt_en"):
                raise ValueError("entry needs a non-empty string 'prompt_en'")
            caption = require_text(entry["prompt_en"], "prompt_en", max_caption_chars).strip()
            prompt_opt = entry.get("prompt_opt")
            if problem := text_problem(prompt_opt, "prompt_opt", max_caption_chars, required=False):
                raise ValueError(problem)
            dims = entry.get("dimension") or []
            dims = [require_text(d, "dimension") for d in (dims if isinstance(dims, list) else [dims])]
        except ValueError as err:
            out.rejects.append(Reject(uri, i, str(err)))
            continue
        out.records.append({"caption": caption, "prompt_opt": prompt_opt, "source": source, "dimensions": dims})
    return out


def read_video_dir(
    uri: str, videos_root: str | None = None, source: str = "video-dir", *,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS, limits: InputLimits | None = None,
) -> ReadResult:
    """A folder of videos; captions come from a sidecar ``<name>.json`` ({"caption": ...}) or ``captions.json``.

    In a local folder, a video that is not a regular file (a FIFO, a device) or a symlink that resolves
    outside the folder is rejected with the reason; a caption file that cannot be read (refused, not
    JSON, nested too deeply) rejects the videos it captions, never the folder.
    """
    limits = _limits(limits, max_caption_chars)
    max_caption_chars = limits.max_caption_chars
    fs, path = storage.fs_and_path(uri)
    if not fs.isdir(path):
        raise SourceError(f"not a directory: {uri}")
    out = ReadResult("videos")
    files = sorted(p for p in fs.find(path) if p.lower().endswith(VIDEO_EXTENSIONS) and "/." not in p[len(path):])
    local = storage.local_path(uri) is not None
    shared: dict[str, str] = {}
    captions_file = f"{path.rstrip('/')}/captions.json"
    if fs.exists(captions_file):
        try:
            shared = load_json_value(_caption_file(fs, path, captions_file), limits)
            if not isinstance(shared, dict):
                raise ValueError("captions.json must map file names to captions")
        except ValueError as err:
            out.rejects.append(Reject(storage.to_uri(fs, captions_file), None, str(err)))
            shared = {}
    for i, p in enumerate(files):
        if local and (problem := _local_video_problem(path, p)):
            out.rejects.append(Reject(storage.to_uri(fs, p), i, problem))
            continue
        name = p.rsplit("/", 1)[-1]
        caption = shared.get(name) or shared.get(p[len(path):].lstrip("/"))
        caption_file = captions_file
        sidecar = p.rsplit(".", 1)[0] + ".json"
        if caption is None and fs.exists(sidecar):
            caption_file = sidecar
            try:
                data = load_json_value(_caption_file(fs, path, sidecar), limits)
                if not isinstance(data, dict):
                    raise ValueError(f'expected {{"caption": ...}}, got {type(data).__name__}')
                caption = data.get("caption")
            except ValueError as err:
                out.rejects.append(Reject(storage.to_uri(fs, sidecar), i, f"bad sidecar: {err}"))
                continue
        if not caption:
            out.rejects.append(Reject(storage.to_uri(fs, p), i, "no caption (no sidecar JSON, not in captions.json)"))
            continue
        if problem := text_problem(caption, "caption", max_caption_chars):
            out.rejects.append(Reject(storage.to_uri(fs, p), i, f"{problem} (from {storage.to_uri(fs, caption_file)})"))
            continue
        out.records.append(_empty_video_record(storage.to_uri(fs, p), caption, source))
    return out


def _local_video_problem(root: str, path: str) -> str | None:
    """Why a file found in a local video folder is not read: a symlink out of the folder, or not a
    regular file; None when it is fine (a missing target is the hashing step's to report)."""
    if real := _outside(root, path):
        return f"a symlink that resolves to {real}, outside the folder {root}"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if kind := storage.non_regular_kind(mode):
        return f"not a regular file ({kind}); only regular files are read"
    return None


def _caption_file(fs, root: str, path: str) -> str:
    """The URI of a caption file of a folder; ``ValueError`` when it is a symlink out of a local folder."""
    uri = storage.to_uri(fs, path)
    if storage.local_path(uri) is not None and (real := _outside(root, path)):
        raise ValueError(f"a symlink that resolves to {real}, outside the folder {root}")
    return uri


# Format name -> reader: the ``lift.readers`` entry point (the catalog's ``format`` values).
READERS: dict[str, Reader] = {
    "lift-hra": read_lift_hra,
    "lift-inference": read_lift_inference,
    "critic-output": read_critic_output,
    "alignment": read_alignment,
    "vbench-prompts": read_vbench_prompts,
    "video-dir": read_video_dir,
}

