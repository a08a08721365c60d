"""MkDocs hook: stage the package as it is installed, so that mkdocstrings can read it.

The package is installed with a setuptools package-dir mapping (reinmax.backends is backends/,
reinmax.conformance is conformance/, reinmax.tasks is tasks/), which a static reader of the
source cannot follow. Before a build this links the package's files under
build/docs-src/reinmax/, the tree that mkdocs.yml's mkdocstrings ``paths`` names.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "docs-src"


def on_startup(**kwargs: Any) -> None:
    stage = STAGE / "reinmax"
    if STAGE.exists():
        shutil.rmtree(STAGE)
    stage.mkdir(parents=True)
    for path in (ROOT / "reinmax").iterdir():
        if path.suffix in (".py", ".pyi") or path.name == "py.typed":
            (stage / path.name).symlink_to(path)
    for package in ("backends", "conformance", "tasks"):
        (stage / package).symlink_to(ROOT / package, target_is_directory=True)
