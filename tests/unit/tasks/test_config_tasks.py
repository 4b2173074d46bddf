"""Config of the real-problem tasks and model names: checked before any worker starts."""

from __future__ import annotations

import os

import pytest

from tdrm_rl.config import ConfigError, load_config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")
SMOLLM2 = os.path.join(ROOT, "recipes", "smollm2", "grpo_tdrm_gsm_symbolic.yaml")


REAL = ["model.policy_path=smollm2-135m"]


def test_reasoning_gym_task_takes_a_dataset_name():
    assert load_config(RECIPE, REAL + ["data.task=reasoning_gym:chain_sum"]).data.task == "reasoning_gym:chain_sum"
    with pytest.raises(ConfigError, match="name a dataset, e.g. reasoning_gym:gsm_symbolic"):
        load_config(RECIPE, REAL + ["data.task=reasoning_gym"])
    with pytest.raises(ConfigError, match="only reasoning_gym takes"):
        load_config(RECIPE, REAL + ["data.task=champ:x"])
    with pytest.raises(ConfigError, match="key 'data.task' = 'gsm8k'"):
        load_config(RECIPE, REAL + ["data.task=gsm8k"])


def test_real_tasks_need_a_real_model():
    with pytest.raises(ConfigError, match="data.task='champ' needs a real model"):
        load_config(RECIPE, ["data.task=champ"])


def test_file_tasks_need_an_existing_path(tmp_path):
    with pytest.raises(ConfigError, match="key 'data.path' must name a .jsonl file"):
        load_config(RECIPE, REAL + ["data.task=jsonl"])
    with pytest.raises(ConfigError, match="key 'data.path' names a missing file"):
        load_config(RECIPE, REAL + ["data.task=parquet", f"data.path={tmp_path}/none.parquet"])
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n')
    cfg = load_config(RECIPE, REAL + ["data.task=jsonl", f"data.path={path}", "data.on_bad_row=skip",
                                      "data.answer_key=a"])
    assert (cfg.data.on_bad_row, cfg.data.answer_key) == ("skip", "a")
    with pytest.raises(ConfigError, match="key 'data.on_bad_row'"):
        load_config(RECIPE, ["data.on_bad_row=ignore"])
    with pytest.raises(ConfigError, match="key 'data.format'"):
        load_config(RECIPE, ["data.format=csv"])


def test_model_name_is_accepted_where_a_path_is_expected():
    cfg = load_config(RECIPE, ["model.policy_path=smollm2-135m"])
    assert cfg.model.policy_path == "smollm2-135m"
    with pytest.raises(ConfigError, match="key 'model.policy_path' names a missing path: smollm3"):
        load_config(RECIPE, ["model.policy_path=smollm3"])


def test_smollm2_recipe():
    cfg = load_config(SMOLLM2, ["rollout.backend=hf"])  # vllm joins the backend choices with the vLLM backend
    assert cfg.model.policy_path == "smollm2-135m" and cfg.model.prm_path is None
    assert cfg.data.task == "reasoning_gym:gsm_symbolic"
    assert (cfg.reward.w_rule, cfg.reward.w_prm, cfg.prm.n_step) == (0.8, 0.2, 2)  # from the canonical recipe
    with open(SMOLLM2) as f:
        assert "backend: vllm" in f.read()
