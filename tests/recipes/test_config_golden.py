"""`tdrm-rl config RECIPE` prints what it printed when the golden files were written: recipes keep their meaning
across refactors. A change a user should see (a new field, a new default) regenerates them on purpose:

    TDRM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/recipes/test_config_golden.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.recipes.test_recipes import RECIPES, ROOT

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def golden_path(recipe: str) -> str:
    return os.path.join(GOLDEN, os.path.relpath(recipe, os.path.join(ROOT, "recipes")).replace(os.sep, "_"))


def test_every_recipe_has_a_golden_file_and_every_golden_file_a_recipe() -> None:
    assert sorted(os.listdir(GOLDEN)) == sorted(os.path.basename(golden_path(r)) for r in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: os.path.relpath(r, ROOT))
def test_config_command_output_is_unchanged(recipe: str) -> None:
    out = subprocess.run([sys.executable, "-m", "tdrm_rl.cli.main", "config", os.path.relpath(recipe, ROOT)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if os.environ.get("TDRM_UPDATE_GOLDEN") == "1":
        with open(golden_path(recipe), "w") as f:
            f.write(out.stdout)
    assert out.stdout == open(golden_path(recipe)).read(), f"`tdrm-rl config {os.path.relpath(recipe, ROOT)}` changed"
