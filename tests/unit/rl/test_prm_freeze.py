"""prm.freeze_layers: the embeddings and the lowest N decoder layers of the PRM keep their weights through a TD
update and get no gradient at all (the cheaper update), the layers above and the head train; a setting that would
freeze every layer is one line before Ray."""

from __future__ import annotations

import os

import pytest
import ray
import torch

from tdrm_rl.cli.main import main
from tdrm_rl.config import load_config
from tdrm_rl.workers.prm import frozen_by_layer
from tests.unit.rl.test_stages import SIZES, InProcessSteps, state

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "recipes", "grpo_tdrm.yaml")


@pytest.mark.parametrize("name, frozen", [
    ("lm.model.embed_tokens.weight", True),  # logprob read-out (tied embeddings: the LM head with them)
    ("lm.model.layers.0.self_attn.q_proj.weight", True),
    ("lm.model.layers.1.mlp.up_proj.weight", True),
    ("lm.model.layers.2.mlp.up_proj.weight", False),
    ("lm.model.layers.12.input_layernorm.weight", False),  # 12 is not 1 followed by 2
    ("lm.model.norm.weight", False),
    ("lm.lm_head.weight", False),
    ("model.layers.1.self_attn.o_proj.weight", True),  # hidden read-out (token classification)
    ("transformer.encoder.layers.0.mlp.dense_h_to_4h.weight", True),  # GLM naming
    ("transformer.embedding.word_embeddings.weight", False),  # no embed_tokens: only layers are matched
])
def test_which_parameters_two_frozen_layers_fix(name, frozen):
    assert frozen_by_layer(name, 2) is frozen
    assert frozen_by_layer(name, 0) is False


def test_frozen_layers_keep_their_weights_and_get_no_gradient(tiny_path, tmp_path):
    cfg = load_config(None, SIZES + ["prm.freeze_layers=2", "prm.backbone_lr=1e-3", f"trainer.output_dir={tmp_path}"])
    assert cfg.model.num_layers == 4
    steps = InProcessSteps(cfg, tiny_path)
    before = state(steps.prm)
    metrics = steps.step(1)
    assert metrics["prm/updated"] == 1.0
    after = state(steps.prm)
    module = steps.prm.workers[0].engine.module
    params = dict(module.named_parameters())
    frozen = [n for n in params if frozen_by_layer(n, 2)]
    training = [n for n in params if not frozen_by_layer(n, 2)]
    assert any(".embed_tokens." in n for n in frozen) and any(".layers.1." in n for n in frozen)
    assert any(".layers.3." in n for n in training) and "score.weight" in training
    for n in frozen:
        assert not params[n].requires_grad and params[n].grad is None, n
    assert set(frozen) <= set(before)  # the exported weights carry the parameters' names
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in training if ".layers.3." in n)
    assert not torch.equal(before["score.weight"], after["score.weight"])


def test_freezing_every_layer_is_one_line_before_ray(tiny_path, tmp_path, capsys):
    out = tmp_path / "run"
    ray_before = ray.is_initialized()  # another test of this session may have started a local Ray already
    rc = main(["train", RECIPE, f"model.policy_path={tiny_path}", "prm.freeze_layers=4", "prm_warmup.enabled=false",
               f"trainer.output_dir={out}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "prm.freeze_layers=4: the PRM has 4 decoder layers; freeze at most 3" in err
    assert "Traceback" not in err
    assert ray.is_initialized() == ray_before and not out.exists()
