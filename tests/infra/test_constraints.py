"""constraints.txt: the pinned set that ``make demo`` and ``make test`` install, within pyproject.toml's bounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
# The extras the Makefile installs (.installed: s3; .installed-test: test and s3). gcs and dev are not installed.
INSTALLED_EXTRAS = ("s3", "test")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, raw in enumerate((REPO / "constraints.txt").read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"constraints.txt:{n}: {line!r} is not name==version (no paths, URLs or options)"
        name = canonicalize_name(m["name"])
        assert name not in pins, f"constraints.txt:{n}: {m['name']} is pinned twice"
        pins[name] = Version(m["version"])
    return pins


def _direct_requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in INSTALLED_EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def test_every_direct_dependency_is_pinned_within_its_bounds():
    pins = _pins()
    assert canonicalize_name("lift-pipeline") not in pins  # the project itself is installed from the checkout
    problems = []
    for req in _direct_requirements():
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name} is not pinned")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{req.name}=={pin} is outside pyproject.toml's {req.specifier}")
    assert not problems, "constraints.txt (refresh it with `make constraints`): " + "; ".join(problems)


def test_the_bounds_the_code_relies_on():
    reqs = {canonicalize_name(r.name): r.specifier for r in _direct_requirements()}
    # typer 0.29 carries its own Click (flows/cli.py); ray._private changes between minor releases;
    # fsspec's exclusive-create mode is new in 2024.12; the pinned transformers and accelerate need torch 2.6.
    for name, too_old, too_new in (("typer", "0.28.0", "0.30.0"), ("ray", "2.58.0", "2.61.0"),
                                   ("fsspec", "2024.6.0", None), ("s3fs", "2024.6.0", None),
                                   ("torch", "2.5.1", "3.0.0")):
        assert not reqs[name].contains(too_old), f"{name} {reqs[name]} allows {too_old}"
        if too_new:
            assert not reqs[name].contains(too_new), f"{name} {reqs[name]} allows {too_new}"
    unbounded = [n for n, spec in reqs.items()
                 if not any(s.operator in ("<", "<=", "==", "~=") for s in spec)
                 and n not in ("fsspec", "s3fs")]  # calendar versions
    assert not unbounded, f"no upper bound: {unbounded}"


def test_the_makefile_installs_with_the_constraints():
    makefile = (REPO / "Makefile").read_text()
    torch_pins = re.search(r"^TORCH_PINS \?= (.+)$", makefile, re.M)[1].split()
    pins = _pins()
    for pin in torch_pins:  # the torch the Makefile installs is the one pinned
        name, version = pin.split("==")
        assert pins[canonicalize_name(name)] == Version(version), pin
    recipes = re.findall(r"^\$\(VENV\)/\.installed(?:-test)?:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert len(recipes) == 2
    installs = [line for recipe in recipes for line in recipe.splitlines()
                if "$(PIP) install" in line and "--upgrade pip" not in line]
    assert len(installs) == 3 and all("-c $(CONSTRAINTS)" in line for line in installs), installs
    assert re.search(r"^CONSTRAINTS \?= constraints\.txt$", makefile, re.M)
