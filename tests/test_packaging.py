"""The package list in setup.cfg is complete: a subpackage missing there is silently left out
of the wheel while the editable install still finds it on disk."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def declared() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    mapping = cfg["options"]["package_dir"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in mapping)  # type: ignore[misc]


def test_every_folder_with_an_init_is_a_listed_package() -> None:
    folders = {
        str(init.parent.relative_to(ROOT))
        for top in ("config", "shm", "worker", "master")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert folders == set(declared().values())


def test_package_list_matches_package_dir() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    packages = set(cfg["options"]["packages"].split())
    assert packages == set(declared())


def test_bare_folder_names_are_not_importable() -> None:
    probe = (
        "import importlib.util as u; "
        "print([n for n in ('config', 'shm', 'worker', 'master') if u.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
