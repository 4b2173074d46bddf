"""Model shapes from config.json: the parameter count equals transformers' own, and the file is found offline in the
documented order (local folder, HF cache, bundled copy), or the error names what to do."""

from __future__ import annotations

import glob
import json
import os

import pytest
import torch

from tdrm_rl.config import load_config
from tdrm_rl.sizing.shapes import BUNDLED_DIR, ShapeError, bundled_path, model_shape, shape_from_config

BUNDLED = sorted(glob.glob(os.path.join(BUNDLED_DIR, "*.json")))


@pytest.mark.parametrize("path", BUNDLED, ids=os.path.basename)
def test_parameter_count_equals_the_transformers_model_of_the_same_config(path: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.load(open(path))
    shape = shape_from_config(raw, os.path.basename(path), "bundled")
    config = AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "architectures"})
    with torch.device("meta"):  # no memory: only the shapes
        model = AutoModelForCausalLM.from_config(config)
    assert shape.params() == sum(p.numel() for p in model.parameters())


def test_every_family_recipe_model_has_a_bundled_config() -> None:
    from tests.recipes.test_recipes import FAMILY_RECIPES

    for recipe in FAMILY_RECIPES:
        assert os.path.isfile(bundled_path(load_config(recipe).model.policy_path)), recipe


def test_the_published_parameter_counts() -> None:
    """The sizes model cards give (billions), from the bundled configs."""
    cfg = load_config(None)
    expected = {"Qwen/Qwen2.5-0.5B-Instruct": 0.494, "Qwen/Qwen2.5-Math-7B-Instruct": 7.616,
                "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 1.777, "THUDM/GLM-4-9B-0414": 9.400}
    for name, billions in expected.items():
        shape = model_shape(cfg, name)
        assert shape.params() / 1e9 == pytest.approx(billions, abs=0.001), name
        assert shape.source.startswith("bundled copy")


def test_a_local_folder_wins_and_the_source_says_so(tmp_path) -> None:
    raw = json.load(open(bundled_path("Qwen/Qwen2.5-0.5B-Instruct")))
    raw["num_hidden_layers"] = 2
    (tmp_path / "config.json").write_text(json.dumps(raw))
    shape = model_shape(load_config(None), str(tmp_path))
    assert shape.layers == 2 and shape.source == f"local folder {tmp_path}"


def test_the_hf_cache_copy_is_preferred_to_the_bundled_one(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    raw = json.load(open(bundled_path("Qwen/Qwen2.5-0.5B-Instruct")))
    raw["num_hidden_layers"] = 3
    repo = tmp_path / "models--Qwen--Qwen2.5-0.5B-Instruct"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(raw))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    shape = model_shape(load_config(None), "Qwen/Qwen2.5-0.5B-Instruct")
    assert shape.layers == 3 and shape.source.startswith("HF cache ")


def test_an_unknown_hub_id_names_the_download_that_fixes_it() -> None:
    with pytest.raises(ShapeError, match=r"hf download nobody/none config.json"):
        model_shape(load_config(None), "nobody/none")


def test_an_architecture_the_plan_cannot_size_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(ShapeError, match=r"model_type 'mamba'.*knows glm4, llama, mistral, qwen2$"):
        shape_from_config({"model_type": "mamba"}, "x/mamba", "local")


def test_the_embedded_tiny_model_is_sized_from_the_recipe() -> None:
    from tdrm_rl.models.load import build_tiny_policy
    from tdrm_rl.models.tokenizer import build_char_tokenizer

    cfg = load_config(None)
    shape = model_shape(cfg, None)
    model = build_tiny_policy(build_char_tokenizer(), cfg.model, seed=0)
    assert shape.params() == sum(p.numel() for p in model.parameters())
