"""The README's recipe table and docs/cluster.md's tables are exactly what `python -m tdrm_rl.sizing.docs` prints
from the current recipes and plan."""

from __future__ import annotations

from tdrm_rl.sizing import docs


def test_generated_tables_are_up_to_date() -> None:
    assert docs.main(["--check"]) == 0, "run: python -m tdrm_rl.sizing.docs"


def test_every_family_recipe_has_a_row_and_every_row_fits() -> None:
    table = docs.readme_table()
    for recipe in docs.family_recipes():
        rows = [line for line in table.splitlines() if f"`{recipe}`" in line]
        assert len(rows) == 1 and rows[0].endswith("| yes |"), recipe
