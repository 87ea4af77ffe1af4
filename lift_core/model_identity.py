"""What identifies a base model in a stage key: its content, not the name a config gives it.

A stage that loads a base (``critic.model``, ``t2v.model``) must rerun when that base's files change,
even under the same path: a rebuilt or replaced folder is another model.
"""

from __future__ import annotations

from lift_core import storage
from lift_core.config import PipelineConfig


def base_fingerprint(model: str, *, built_from_settings: bool, catalog: str, run_root: str, kind: str) -> str:
    """The fingerprint of the base ``model`` (a config's ``critic.model`` or ``t2v.model``).

    - a catalog model (``catalog:<name>``): the sha256s the catalog declares for its files (every file
      is checked against them when it loads), or the reference when the catalog cannot be read;
    - a model built from the config's own settings (``build_tiny``): those settings, which the stage's
      key already holds; the folder is rebuilt whenever they change and may not exist yet;
    - a folder, local or remote: its content (``storage.fingerprint_uri``);
    - anything else, a hub id: its name (download a revision to a folder to pin its content).
    """
    from lift_core import shipped

    if shipped.is_catalog_ref(model):
        try:
            found = shipped.entry(model, catalog, kind)
        except shipped.ShippedModelError:
            return storage.hash_parts("ref", model)  # the stage itself reports the bad reference
        return storage.hash_parts("catalog", model, sorted(found.files.items()), built_from_settings)
    if built_from_settings:
        return storage.hash_parts("built")  # the settings are in the key; where it is built is not
    target = model.replace("{run_root}", run_root)
    fs, path = storage.fs_and_path(target)
    if fs.isdir(path):
        return storage.hash_parts("dir", storage.fingerprint_uri(target))
    return storage.hash_parts("ref", model)


def critic_base_fingerprint(cfg: PipelineConfig) -> str:
    """``base_fingerprint`` of ``cfg.critic.model``."""
    c = cfg.critic
    return base_fingerprint(c.model, built_from_settings=c.build_tiny is not None, catalog=cfg.data.catalog,
                            run_root=cfg.run_root, kind="critic")


def t2v_base_fingerprint(cfg: PipelineConfig) -> str:
    """``base_fingerprint`` of ``cfg.t2v.model``."""
    t = cfg.t2v
    return base_fingerprint(t.model, built_from_settings=t.build_tiny is not None, catalog=cfg.data.catalog,
                            run_root=cfg.run_root, kind="t2v")


__all__ = ["base_fingerprint", "critic_base_fingerprint", "t2v_base_fingerprint"]
