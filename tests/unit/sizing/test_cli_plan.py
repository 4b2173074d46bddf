"""`tdrm-rl plan` on every recipe (each must pass its own plan), and `train`'s refusal of a layout that cannot fit."""

from __future__ import annotations

import os

import pytest

from tdrm_rl.cli.main import main
from tests.recipes.test_recipes import RECIPES

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
Z1 = os.path.join("recipes", "glm4", "grpo_tdrm_glm_z1_9b.yaml")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: os.path.relpath(r, ROOT))
def test_every_recipe_passes_its_own_plan(recipe: str, capsys) -> None:
    assert main(["plan", recipe]) == 0
    out = capsys.readouterr().out
    assert "not measurements on a GPU" in out
    assert "fits: yes" in out or "nothing to fit" in out


def test_plan_prints_every_term_and_the_verdict_of_each_gpu(capsys) -> None:
    os.chdir(ROOT)
    assert main(["plan", Z1]) == 0
    out = capsys.readouterr().out
    assert "config.json: bundled copy tdrm_rl/sizing/model_configs/THUDM--GLM-Z1-9B-0414.json" in out
    for term in ("optimizer", "activations", "logits", "KV cache", "flat bucket", "gathered module"):
        assert term in out, term
    gpu_rows = [line.split() for line in out.splitlines() if line.startswith("GPU ") and "processes" not in line]
    assert [row[3] for row in gpu_rows] == ["yes"] * 8  # GPU, index, need, verdict, processes
    assert "largest that fit" in out


def test_plan_of_a_layout_that_cannot_fit_exits_1_and_says_why(capsys) -> None:
    assert main(["plan", Z1, "prm.world_size=3", "rollout.num_workers=2", "prm.micro_batch_size=4"]) == 1
    out = capsys.readouterr().out
    assert "fits: NO" in out and "GPU 3 (prm[0]) needs" in out


def test_train_refuses_it_with_one_line_and_exit_2_before_anything_starts(capsys, tmp_path) -> None:
    out_dir = tmp_path / "run"
    code = main(["train", Z1, "prm.world_size=3", "rollout.num_workers=2", "prm.micro_batch_size=4",
                 f"trainer.output_dir={out_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("tdrm-rl: config error: ")
    assert "does not fit" in err and "cluster.skip_plan=true" in err
    assert not out_dir.exists()  # refused before the run folder, the warm start or Ray


def test_a_model_without_any_config_json_is_one_line(capsys) -> None:
    code = main(["plan", Z1, "model.policy_path=nobody/none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "hf download nobody/none config.json" in err
