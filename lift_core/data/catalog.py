"""The dataset catalog: named datasets with an fsspec URI, a format, a videos root and a source.

The catalog is a YAML file whose path is the config value ``data.catalog`` (the project's own
declarations are ``data_catalog/catalog.yaml``). Each dataset's format must have a registered reader
(``lift_core.data.sources``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from lift_core.data.sources import SourceError, reader_formats

# Where a relative catalog path resolves when it is not found from the working directory: the
# folder that holds the packages (the repository root, or site-packages once installed).
_PACKAGES_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    uri: str
    format: str
    source: str
    videos_root: str | None = None

    def resolved(self, variables: dict[str, str]) -> "DatasetEntry":
        """This entry with ``{name}`` placeholders replaced; one left unresolved is a SourceError."""

        def sub(value: str | None) -> str | None:
            if value is None:
                return None
            for key, val in variables.items():
                value = value.replace("{" + key + "}", val)
            if "{" in value and "}" in value:
                raise SourceError(f"dataset {self.name!r}: unresolved placeholder in {value!r} (is data.synthetic set?)")
            return value

        return DatasetEntry(self.name, sub(self.uri), self.format, self.source, sub(self.videos_root))


def load_catalog(path: str | Path) -> dict[str, DatasetEntry]:
    """The datasets declared in the catalog YAML at ``path``: ``datasets: {name: {uri, format, ...}}``."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = _PACKAGES_ROOT / path
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise SourceError(f"cannot read catalog {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SourceError(f"catalog {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets") or {}, dict):
        raise SourceError(f"catalog {path}: expected a mapping 'datasets: {{name: {{uri, format, ...}}}}'")
    formats = reader_formats()
    entries = {}
    for name, spec in (raw.get("datasets") or {}).items():
        if not isinstance(spec, dict) or "uri" not in spec or "format" not in spec:
            raise SourceError(f"catalog {path}: dataset {name!r} needs 'uri' and 'format'")
        if spec["format"] not in formats:
            raise SourceError(f"catalog {path}: dataset {name!r} has unknown format {spec['format']!r}")
        entries[name] = DatasetEntry(name, spec["uri"], spec["format"], spec.get("source", name), spec.get("videos_root"))
    return entries
