"""Every recipe validates; the model-family recipes are consistent with their GPU layout and the recipe table of
docs/cluster.md."""

from __future__ import annotations

import glob
import os

import pytest
import torch
import yaml

from tdrm_rl.config import is_hub_id, layout_gpus, load_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "**", "*.yaml"), recursive=True))


def _sized_for_gpus(path: str) -> bool:
    """GPU-cluster family recipes declare their GPU count; CPU ones (recipes/smollm2/) do not."""
    return bool((yaml.safe_load(open(path)).get("cluster") or {}).get("num_gpus"))


FAMILY_RECIPES = [r for r in RECIPES if os.path.dirname(r) != os.path.join(ROOT, "recipes") and _sized_for_gpus(r)]

# The families the project ships recipes for, and the HF architecture each one loads as.
FAMILIES = {
    "Qwen/Qwen2.5-0.5B-Instruct": "qwen2",
    "Qwen/Qwen2.5-1.5B-Instruct": "qwen2",
    "Qwen/Qwen2.5-Math-1.5B-Instruct": "qwen2",
    "Qwen/Qwen2.5-Math-7B-Instruct": "qwen2",
    "THUDM/GLM-4-9B-0414": "glm4",
    "THUDM/GLM-Z1-9B-0414": "glm4",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": "qwen2",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": "qwen2",
}


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


@pytest.mark.parametrize("recipe", RECIPES, ids=rel)
def test_every_recipe_validates(recipe: str) -> None:
    load_config(recipe)


def test_every_family_has_a_recipe() -> None:
    paths = {load_config(r).model.policy_path for r in FAMILY_RECIPES}
    assert paths == set(FAMILIES)


@pytest.mark.parametrize("recipe", FAMILY_RECIPES, ids=rel)
def test_family_recipe_extends_the_canonical_one_and_fits_its_gpus(recipe: str) -> None:
    raw = yaml.safe_load(open(recipe))
    assert os.path.abspath(os.path.join(os.path.dirname(recipe), raw["extends"])) == \
        os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")
    cfg = load_config(recipe)
    assert is_hub_id(cfg.model.policy_path) or os.path.isdir(cfg.model.policy_path)
    assert cfg.rollout.backend == "vllm"
    assert cfg.cluster.num_gpus > 0 and layout_gpus(cfg) == cfg.cluster.num_gpus
    assert cfg.cluster.num_gpus_per_worker >= 1
    assert 0.0 < cfg.rollout.gpu_memory_utilization <= 0.95
    assert cfg.policy.zero_stage in (2, 3) and cfg.prm.zero_stage in (2, 3)
    # Each trainer rank holds at least one micro-batch of the step's trajectories.
    rows = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    assert rows >= cfg.policy.world_size * cfg.policy.micro_batch_size
    assert cfg.trainer.output_dir.startswith("runs/")
    others = [load_config(r).trainer.output_dir for r in FAMILY_RECIPES if r != recipe]
    assert cfg.trainer.output_dir not in others


@pytest.mark.parametrize("recipe", FAMILY_RECIPES, ids=rel)
def test_cluster_doc_gpu_table_lists_the_recipe(recipe: str) -> None:
    from tdrm_rl.sizing.docs import CLUSTER_DOC, generated_block

    cfg = load_config(recipe)
    table = generated_block(open(CLUSTER_DOC).read(), "recipe table")
    rows = [line for line in table.splitlines() if f"`{rel(recipe)}`" in line]
    assert len(rows) == 1, f"docs/cluster.md's GPU table has no single row for {rel(recipe)}"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cfg.model.policy_path in rows[0]
    assert str(cfg.cluster.num_gpus) in cells, f"recommended GPU count {cfg.cluster.num_gpus} missing in {rows[0]}"


@pytest.mark.parametrize("model_type", sorted(set(FAMILIES.values())))
def test_family_architecture_loads_as_policy_and_prm(model_type: str, tmp_path) -> None:
    """A tiny random model of each family's architecture goes through the same loaders the recipes use."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tdrm_rl.models.load import load_policy, load_prm, prm_step_logits
    from tdrm_rl.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, head_dim=16,
                                  max_position_embeddings=256, tie_word_embeddings=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    policy, _ = load_policy(str(tmp_path))
    prm, _ = load_prm(str(tmp_path), init_from_policy=True)
    assert policy.config.model_type == prm.config.model_type == model_type
    ids = torch.tensor([tok("Start with 3: +4\n\n= 7\n\nAnswer: 7")["input_ids"]])
    step_ends = torch.tensor([[5, 10, ids.shape[1] - 1]])
    with torch.no_grad():
        values = torch.sigmoid(prm_step_logits(prm, ids, torch.ones_like(ids), step_ends, torch.ones_like(step_ends)))
    assert values.shape == (1, 3) and torch.all((values > 0.4) & (values < 0.6))  # fresh head: ~0.5
