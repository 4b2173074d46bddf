"""reward.format_reward: a small bonus in the policy's reward for an answer in the requested format, never in the
PRM's TD targets; off by default (the rewards are the plain blend)."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.algos.td import td_targets, terminal_mask
from tdrm_rl.config import load_config
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.rl.stages import StepStages
from tdrm_rl.tasks import get_task

# right and boxed, right without the box, wrong and boxed, no answer at all
RESPONSES = ["3+4=7\n\n\\boxed{7}", "3+4=7\n\nso 7", "3+4=8\n\n\\boxed{8}", "I do not know"]
PROMPT = "Start with 3: +4\n"


def stages_for(*overrides):
    stages = StepStages()  # the advantage stage needs only the config
    stages.cfg = load_config(None, ["data.answer_extraction=boxed_or_last_number", "reward.w_rule=1.0",
                                    "reward.w_prm=0.0", *overrides])
    return stages


def batch_for(tok, cfg):
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    batch = collate([prompt] * 4, ids, [0] * 4, TokenTexts(tok), pad_id=tok.pad_token_id,
                    meta={"response_text": list(RESPONSES), "answer": ["7"] * 4})
    task = get_task(cfg.data)
    batch.outcome = torch.tensor([task.verify(r, "7") for r in RESPONSES])
    batch.step_logits = torch.zeros(batch.step_mask.shape)
    return batch


def test_format_reward_goes_to_the_policy_not_to_the_td_targets(tok):
    stages = stages_for("reward.format_reward=0.1")
    batch = batch_for(tok, stages.cfg)
    assert batch.outcome.tolist() == [1.0, 1.0, 0.0, 0.0]  # the bare "so 7" counts with boxed_or_last_number
    _, estimate, _ = stages.advantage_stage(batch)
    assert batch.rewards.tolist() == pytest.approx([1.1, 1.0, 0.1, 0.0])
    assert batch.outcome.tolist() == [1.0, 1.0, 0.0, 0.0]  # unchanged: the verifiable reward
    mask = batch.response_mask
    adv = ((estimate.advantages * mask).sum(1) / mask.sum(1)).tolist()  # GRPO: the same on every token
    assert adv[0] > adv[1] > adv[2] > adv[3]  # the box is worth a little more than the bare right answer
    targets = td_targets(stages.cfg.prm, batch.step_logits, batch)
    assert targets[terminal_mask(batch.step_mask)].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_format_reward_is_off_by_default(tok):
    stages = stages_for()
    assert stages.cfg.reward.format_reward == 0.0
    batch = batch_for(tok, stages.cfg)
    stages.advantage_stage(batch)
    assert batch.rewards.tolist() == batch.outcome.tolist()


def test_dense_rewards_carry_the_format_reward_at_the_end(tok):
    stages = stages_for("reward.format_reward=0.1", "reward.dense=value_diff")
    batch = batch_for(tok, stages.cfg)
    _, _, token_rewards = stages.advantage_stage(batch)
    assert token_rewards.sum(1).tolist() == pytest.approx([1.1, 1.0, 0.1, 0.0])  # w_prm = 0: only the rule part
