"""Shipped model checkpoints: the demo's pre-trained bases, versioned like real checkpoints.

Real LiFT users download CogVideoX-2B and a pre-trained VLM; the demo's users get tiny pre-trained
bases that ``lift build-demo-models`` built once with this project's recipes. They live in the
repository as safetensors folders and are declared in the catalog YAML (``data.catalog``) under
``models``, each with the sha256 of every file and its build record::

    models:
      lift-demo-vlm:
        path: models/lift-demo-vlm          # relative to the catalog file
        kind: critic                        # or t2v
        files: {config.json: <sha256>, model.safetensors: <sha256>, ...}
        record: {config: ..., recipe_fingerprint: ..., steps: ..., seeds: ..., wall_time_s: ..., figures: ...}

``critic.model`` and ``t2v.model`` name one as ``catalog:<name>``; it loads through the same
``from_pretrained`` path as a Hub checkpoint, after every file's sha256 is checked. A config whose
build settings (``build_tiny``, ``pretrain``, shapes) differ from the record builds its own instead;
a record whose recipe fingerprint differs from the code's is used with a warning naming the command
that rebuilds it (a test keeps them equal on main).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

log = logging.getLogger("lift.models")

PREFIX = "catalog:"
REBUILD_COMMAND = "lift build-demo-models"
_PACKAGES_ROOT = Path(__file__).resolve().parents[1]  # the repository root (or site-packages)


class ShippedModelError(ValueError):
    """A shipped model is missing, unknown, or a file does not match its sha256."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: str  # absolute local directory
    kind: str  # critic | t2v
    files: dict[str, str] = field(default_factory=dict)  # relative file name -> sha256
    record: dict[str, Any] = field(default_factory=dict)


def is_catalog_ref(model: str) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def catalog_path(catalog: str | Path) -> Path:
    path = Path(catalog)
    if not path.is_absolute() and not path.exists():
        path = _PACKAGES_ROOT / path
    return path


def load_entries(catalog: str | Path) -> dict[str, ModelEntry]:
    """The ``models`` declared in the catalog YAML at ``catalog``."""
    path = catalog_path(catalog)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ShippedModelError(f"cannot read catalog {path}: {err.strerror or err}") from None
    models = raw.get("models") or {}
    if not isinstance(models, dict):
        raise ShippedModelError(f"catalog {path}: 'models' must be a mapping of name to entry")
    out = {}
    for name, spec in models.items():
        if not isinstance(spec, dict) or not {"path", "kind", "files"} <= set(spec):
            raise ShippedModelError(f"catalog {path}: model {name!r} needs 'path', 'kind' and 'files'")
        out[name] = ModelEntry(name, str((path.parent / spec["path"]).resolve()), spec["kind"],
                               dict(spec["files"]), dict(spec.get("record") or {}))
    return out


def entry(ref: str, catalog: str | Path, kind: str) -> ModelEntry:
    """The catalog entry ``ref`` (``catalog:<name>``) names; its kind must be ``kind``."""
    name = ref[len(PREFIX):] if is_catalog_ref(ref) else ref
    entries = load_entries(catalog)
    if name not in entries:
        raise ShippedModelError(f"{ref}: no model {name!r} in catalog {catalog_path(catalog)} "
                                f"(it has {sorted(entries)}); `{REBUILD_COMMAND}` builds the demo's")
    found = entries[name]
    if found.kind != kind:
        raise ShippedModelError(f"{ref}: catalog model {name!r} is a {found.kind} model, not a {kind} model")
    return found


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_files(directory: str) -> dict[str, str]:
    """sha256 of every regular file under ``directory``, by relative POSIX path."""
    out = {}
    for root, _, names in os.walk(directory):
        for n in names:
            full = os.path.join(root, n)
            if os.path.isfile(full) and not os.path.islink(full):
                out[Path(os.path.relpath(full, directory)).as_posix()] = file_sha256(full)
    return dict(sorted(out.items()))


def verified_dir(found: ModelEntry) -> str:
    """``found``'s directory after checking every declared file's sha256 and that no weight file is
    undeclared; raises ``ShippedModelError`` naming the file otherwise."""
    if not os.path.isdir(found.path):
        raise ShippedModelError(f"shipped model {found.name}: folder {found.path} is missing "
                                f"(a partial checkout? `{REBUILD_COMMAND}` rebuilds it)")
    for rel, want in found.files.items():
        full = os.path.join(found.path, rel)
        if not os.path.isfile(full):
            raise ShippedModelError(f"shipped model {found.name}: file {full} is missing")
        got = file_sha256(full)
        if got != want:
            raise ShippedModelError(f"shipped model {found.name}: file {full} has sha256 {got[:16]}…, the catalog "
                                    f"declares {want[:16]}…: it is corrupt or was changed; restore it (git checkout) "
                                    f"or rebuild with `{REBUILD_COMMAND}`")
    extra = [rel for rel in dir_files_names(found.path) if rel not in found.files and rel.endswith(".safetensors")]
    if extra:
        raise ShippedModelError(f"shipped model {found.name}: weight files not in the catalog: {extra}")
    return found.path


def dir_files_names(directory: str) -> list[str]:
    return sorted(Path(os.path.relpath(os.path.join(r, n), directory)).as_posix()
                  for r, _, names in os.walk(directory) for n in names)


def recipe_fingerprint(objects: Iterable[Any], values: Any = None) -> str:
    """16 hex chars of the source of the functions, classes and modules a build runs (its recipe),
    and of constant ``values`` (JSON) it reads."""
    import json

    h = hashlib.sha256(json.dumps(values, sort_keys=True).encode())
    for obj in objects:
        h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}".encode())
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def resolve(ref: str, catalog: str | Path, kind: str, wanted_config: dict[str, Any] | None,
            fingerprint: str) -> str | None:
    """The verified local directory of the shipped model ``ref`` when ``wanted_config`` (the build
    settings a config asks for; None: any) is the one it was built from; None when they differ, so
    the caller builds its own."""
    found = entry(ref, catalog, kind)
    record = found.record
    if wanted_config is not None and record.get("config") != wanted_config:
        log.warning("the config's build settings differ from those of the shipped %s: building its own", found.name)
        return None
    if record.get("recipe_fingerprint") != fingerprint:
        log.warning("shipped %s was built by other recipe code (fingerprint %s, the code's %s): rebuild it with "
                    "`%s`", found.name, record.get("recipe_fingerprint"), fingerprint, REBUILD_COMMAND)
    return verified_dir(found)


__all__ = ["ModelEntry", "PREFIX", "REBUILD_COMMAND", "ShippedModelError", "dir_files", "entry", "file_sha256",
           "is_catalog_ref", "load_entries", "recipe_fingerprint", "resolve", "verified_dir"]
