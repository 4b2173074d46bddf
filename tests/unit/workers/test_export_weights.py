"""Full weights out of a ZeRO-3 trainer (review F6), on a real in-process DeepSpeed engine (one gloo rank, no Ray).

The save and the reload-path weight push gather one module at a time: never more than the largest module's
parameters are whole at once (the old single GatheredParameters over every parameter put a second full model on
each GPU). The result is the full model, tied weights included, and the HF checkpoint written from it loads back
as the same weights."""

from __future__ import annotations

import deepspeed
import pytest
import torch
from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tdrm_rl.config import load_config
from tdrm_rl.models.tokenizer import build_char_tokenizer
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.policy import PolicyWorker

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = ["rollout.prompts_per_step=2", "rollout.group_size=2", "policy.micro_batch_size=4", "policy.zero_stage=3"]


def save_policy(path: str, tied: bool) -> str:
    tok = build_char_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=tied, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def worker(request, tmp_path_factory):
    cfg = load_config(None, SIZES)
    w = PolicyWorker(cfg, save_policy(str(tmp_path_factory.mktemp("policy")), request.param))
    w.setup_distributed("127.0.0.1", free_port())
    w.setup()
    assert w.zero3() and w.engine.module.config.tie_word_embeddings == request.param
    return w


def everything_gathered_at_once(w) -> dict[str, torch.Tensor]:
    """The reference: the whole model gathered in one go (what export did before)."""
    module = w.engine.module
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_export_is_the_full_model_gathered_one_module_at_a_time(worker):
    params = list(worker.engine.module.parameters())
    assert all(p.ds_status == ZeroParamStatus.NOT_AVAILABLE for p in params)  # partitioned between calls
    largest_module = max(sum(p.ds_numel for p in m.parameters(recurse=False))
                         for m in worker.engine.module.modules())
    whole = []
    exported = {}
    for name, tensor in worker.iter_full_weights():
        exported[name] = tensor
        whole.append(sum(p.ds_numel for p in params if p.ds_status == ZeroParamStatus.AVAILABLE))
    assert max(whole) <= largest_module < sum(p.ds_numel for p in params) / 2
    assert all(p.ds_status == ZeroParamStatus.NOT_AVAILABLE for p in params)  # released again

    reference = everything_gathered_at_once(worker)
    assert exported.keys() == reference.keys()
    assert all(torch.equal(exported[k], reference[k]) and exported[k].device.type == "cpu" for k in reference)
    if worker.engine.module.config.tie_word_embeddings:  # one tensor under both names, as in the module
        assert exported["lm_head.weight"] is exported["model.embed_tokens.weight"]
    assert worker.export_state_dict().keys() == reference.keys()


def test_the_saved_checkpoint_loads_back_as_the_trainer_weights(worker, tmp_path):
    worker.save(str(tmp_path / "policy"))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"), dtype=torch.float32)
    assert loaded.config.tie_word_embeddings == worker.engine.module.config.tie_word_embeddings
    reference = everything_gathered_at_once(worker)
    state = loaded.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_the_reload_blob_takes_the_export_of_a_tied_model(worker):
    """The reload sync ships the export as one safetensors blob, which refuses two names on one storage."""
    from safetensors.torch import load, save

    from tdrm_rl.workers.weight_sync import unshared

    state = worker.export_state_dict()
    back = load(save(unshared(state)))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
