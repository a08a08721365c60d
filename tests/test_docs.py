"""The documentation site builds strictly: no broken link, no missing reference, no warning.

One ``mkdocs build --strict`` (about 6 s here) into a temporary folder; then every public name of
every module that the API reference documents as a whole has its own entry on the built site.
Skipped only where MkDocs is not installed (the ``docs`` extra).
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
pytest.importorskip("mkdocstrings", reason="the docs extra (mkdocstrings) is not installed")

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r"^::: *(?P<target>[\w.]+) *$", re.MULTILINE)
SOURCE = {"reinmax.backends": "backends", "reinmax.conformance": "conformance"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, f"mkdocs build printed warnings:\n{log}"
    return out


def _source(module: str) -> Path | None:
    """The file that defines ``module`` in this checkout, through the package-dir mapping."""
    parts = module.split(".")
    folder = SOURCE.get(".".join(parts[:2]))
    base = ROOT.joinpath(folder, *parts[2:]) if folder else ROOT.joinpath(*parts)
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _exports(module: str) -> list[str] | None:
    """``module.__all__``: read from the source where it is a literal, else from the import."""
    path = _source(module)
    if path is None:
        return None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                break
    return list(getattr(importlib.import_module(module), "__all__", []) or []) or None


def _documented_modules() -> list[tuple[Path, str]]:
    """(page, module) for each ``::: target`` of the API pages whose target is a module."""
    found = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            if _source(match["target"]) is not None:
                found.append((page, match["target"]))
    return found


def test_the_site_builds_strictly(site):
    assert (site / "index.html").is_file()
    assert (site / "SPEC" / "index.html").is_file(), "docs/SPEC.md is not on the site"


def test_every_nav_page_exists():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = re.findall(r":\s*([\w./-]+\.md)\s*$", text, re.MULTILINE)
    assert pages, "mkdocs.yml has no nav"
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"nav pages missing from docs/: {missing}"


def test_every_public_name_has_a_reference_entry(site):
    modules = _documented_modules()
    assert modules, "no API page documents a whole module"
    anchors = set(
        re.findall(r'id="([\w.]+)"', " ".join(p.read_text() for p in site.rglob("*.html")))
    )
    missing = []
    for page, module in modules:
        for name in _exports(module) or []:
            if f"{module}.{name}" not in anchors:
                missing.append(f"{module}.{name} ({page.name})")
    assert not missing, f"public names without a reference entry: {missing}"


def test_every_top_level_name_has_a_reference_entry(site):
    import reinmax

    anchors = set(
        re.findall(r'id="([\w.]+)"', " ".join(p.read_text() for p in site.rglob("*.html")))
    )
    missing = [name for name in reinmax.__all__ if f"reinmax.{name}" not in anchors]
    assert not missing, f"reinmax names without a reference entry: {missing}"


def test_the_estimator_entries_say_what_the_functions_docstrings_say():
    import reinmax

    page = (ROOT / "docs" / "api" / "reinmax.md").read_text(encoding="utf-8")
    entries = dict(re.findall(r"^### `reinmax\.(\w+)` \{ #reinmax\.\w+ \}\n\n(.*)$", page, re.M))
    assert entries, "docs/api/reinmax.md has no estimator entries"
    for name, text in entries.items():
        summary = getattr(reinmax, name).__doc__.strip().splitlines()[0]
        assert text.startswith(summary), f"reinmax.{name}: the entry says {text!r}, not {summary!r}"
