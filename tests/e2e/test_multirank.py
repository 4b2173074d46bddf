"""Multi-rank trainer groups over Ray: torch.distributed (gloo) across actors, DeepSpeed ZeRO across ranks."""

import pytest
import torch

from tdrm_rl.algos import broadcast_sequence_advantages, grpo_advantages
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.config import load_config
from tdrm_rl.models.load import build_tiny_policy
from tdrm_rl.models.tokenizer import build_char_tokenizer
from tests.e2e.conftest import RECIPE
from tdrm_rl.workers.group import WorkerGroup
from tdrm_rl.workers.placement import Placement
from tdrm_rl.workers.policy import PolicyWorker


@pytest.fixture(scope="module")
def random_policy(tmp_path_factory):
    """A random tiny policy: the test is about ranks agreeing, not about what the policy knows."""
    tok = build_char_tokenizer()
    cfg = load_config(RECIPE)
    path = str(tmp_path_factory.mktemp("random-policy"))
    build_tiny_policy(tok, cfg.model, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def logprobs_in_this_process(path: str, state: dict, batch) -> torch.Tensor:
    """The reference: the policy's weights loaded here, the whole batch scored in one forward pass."""
    from tdrm_rl.models.load import load_policy
    from tdrm_rl.models.logprobs import token_logprobs

    model, _ = load_policy(path)
    model.load_state_dict(state)
    with torch.no_grad():
        return token_logprobs(model.eval(), batch.input_ids, batch.attention_mask) * batch.response_mask


def make_batch(rows: int = 16):
    tok = build_char_tokenizer()
    gen = torch.Generator().manual_seed(0)
    prompts = [tok(f"Q: {i}+{i}?\n", add_special_tokens=False)["input_ids"] for i in range(rows)]
    responses = [torch.randint(10, 60, (int(torch.randint(5, 20, (1,), generator=gen)),), generator=gen).tolist()
                 for _ in range(rows)]
    batch = collate(prompts, responses, [i // 4 for i in range(rows)], TokenTexts(tok), pad_id=tok.pad_token_id)
    rewards = torch.tensor([float(i % 3 == 0) for i in range(rows)])
    adv = grpo_advantages(rewards, batch.group_ids, 1e-6)
    batch.advantages = broadcast_sequence_advantages(adv, batch.response_mask)
    return batch


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_rank_zero_policy_group_ranks_agree_after_a_step(ray_local, tmp_path, random_policy, zero_stage):
    cfg = load_config(RECIPE, ["policy.world_size=2", f"policy.zero_stage={zero_stage}", "rollout.prompts_per_step=4",
                               "rollout.group_size=4", "policy.micro_batch_size=4", "policy.lr=1e-3",
                               f"trainer.output_dir={tmp_path}"])
    placement = Placement(cfg)
    group = WorkerGroup(PolicyWorker, "policy", cfg, world_size=2, distributed=True, placement=placement,
                        model_path=random_policy, num_threads=1)
    try:
        # Two actors in one process group, on the bundles of the policy's placement group.
        assert len(set(group.run("pid"))) == 2
        before = group.run("export_state_dict", True)  # every rank's copy, to compare ranks
        metrics = group.run("update", make_batch())
        after = group.run("export_state_dict", True)
        # Each rank trained on its own shard of the batch ...
        assert all(m["policy/loss"] == m["policy/loss"] for m in metrics)
        assert metrics[0]["policy/loss"] != metrics[1]["policy/loss"]
        # ... and after the step both hold the same weights, which moved.
        for name in after[0]:
            assert torch.equal(after[0][name], after[1][name]), name
        assert max((after[0][k] - before[0][k]).abs().max().item() for k in after[0]) > 0
        assert torch.equal(before[0]["lm_head.weight"], before[1]["lm_head.weight"])
        # Without asking for every rank's copy, only rank 0 copies the weights out (review F6).
        default = group.run("export_state_dict")
        assert default[1] == {} and default[0].keys() == after[0].keys()
        assert all(torch.equal(default[0][k], after[0][k]) for k in after[0])
        # A no-grad pass: under ZeRO-2 each rank scores only its shard (review F18), under ZeRO-3 all of it; either
        # way every rank returns the whole batch, in order, as one process scoring it alone would.
        batch = make_batch(15)  # not a multiple of the two ranks
        scored = group.run("logprobs", batch)
        assert torch.equal(scored[0], scored[1])
        assert torch.allclose(scored[0], logprobs_in_this_process(random_policy, after[0], batch), atol=1e-5)
    finally:
        group.kill()
        placement.remove()
