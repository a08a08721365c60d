"""README.md says only what the result files hold: every results block is redrawn from its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reinmax.tasks import readme

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("page", readme.DEFAULT_PAGES)
def test_every_results_table_is_what_its_file_holds(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    assert readme.blocks(text), f"{page} has no results blocks"
    assert readme.render(text, ROOT) == text, f"run `reinmax readme` and commit {page}"


def _vae_file(tmp_path: Path) -> Path:
    run = {
        "estimator": "reinmax", "config": "8x4", "seed": 0, "train_neg_elbo": 130.0,
        "test_neg_elbo": 131.5, "gradient_analysis_start": None, "gradient_analysis": None,
    }  # fmt: skip
    path = tmp_path / "vae.json"
    path.write_text(json.dumps({"runs": [run]}))
    return path


def test_a_stale_table_is_redrawn_and_check_fails(tmp_path):
    _vae_file(tmp_path)
    stale = "<!-- results: vae vae.json -->\n| old |\n<!-- /results -->\n"
    (tmp_path / "README.md").write_text(stale)
    assert readme.main(["--readme", str(tmp_path / "README.md"), "--check"]) == 1
    assert readme.main(["--readme", str(tmp_path / "README.md")]) == 0
    fresh = (tmp_path / "README.md").read_text()
    assert "| reinmax | 130.0 ± 0.0 | 131.5 ± 0.0 |" in fresh
    assert readme.main(["--readme", str(tmp_path / "README.md"), "--check"]) == 0


def test_a_missing_file_or_unknown_kind_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        readme.render("<!-- results: vae nothing.json -->\n<!-- /results -->", tmp_path)
    with pytest.raises(ValueError, match="unknown kind 'nope'"):
        readme.render("<!-- results: nope x.json -->\n<!-- /results -->", tmp_path)


def test_fuzz_runs_are_one_table_with_the_shared_reference_once(tmp_path):
    from reinmax.conformance.fuzz import _tally

    numpy, jax, torch = _tally(), _tally(), _tally()
    numpy["calls"] = jax["calls"] = torch["calls"] = 7
    torch["sample_mismatches"] = 2
    (tmp_path / "a.json").write_text(json.dumps({"numpy": numpy, "jax": jax}))
    (tmp_path / "b.json").write_text(json.dumps({"numpy": numpy, "torch": torch}))
    other = {**numpy, "calls": 5}
    (tmp_path / "c.json").write_text(json.dumps({"numpy": other}))
    text = readme.render("<!-- results: fuzz a.json b.json c.json -->\n<!-- /results -->", tmp_path)
    assert "| | numpy | jax | torch | numpy (file 3) |" in text
    assert "| calls | 7 | 7 | 7 | 5 |" in text
    assert "| sample_mismatches | 0 | 0 | 2 | 0 |" in text
