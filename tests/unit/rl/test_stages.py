"""The stages of one RL step on in-process workers: the real roles (HF rollout, DeepSpeed policy and PRM on a
one-rank gloo group) called directly through LocalGroup, with no Ray, so the stage logic is tested on its own."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.config import load_config
from tdrm_rl.data.collate import TokenTexts
from tdrm_rl.data.sampler import TrainSampler
from tdrm_rl.models.tokenizer import build_char_tokenizer
from tdrm_rl.rl.cores import CoreShare
from tdrm_rl.rl.metrics import STAGES
from tdrm_rl.rl.schedule import PRMSchedule
from tdrm_rl.rl.stages import StepStages
from tdrm_rl.tasks import get_task
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.group import LocalGroup
from tdrm_rl.workers.policy import PolicyWorker
from tdrm_rl.workers.prm import PRMWorker
from tdrm_rl.workers.rollout.hf import RolloutWorker
from tdrm_rl.workers.weight_sync import WeightSync

SIZES = ["rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=24",
         "policy.micro_batch_size=4", "prm.micro_batch_size=4", "policy.lr=1e-3", "prm.lr=1e-3",
         "trainer.torch_threads=1"]


class InProcessSteps(StepStages):
    def __init__(self, cfg, path: str) -> None:
        self.cfg = cfg
        self.tokenizer = build_char_tokenizer()
        self.task = get_task(cfg.data)
        self.token_texts = TokenTexts(self.tokenizer)
        self.sampler = TrainSampler(self.task, 0, seed=0)
        self.schedule = PRMSchedule(cfg.prm)
        self.cores = CoreShare(cfg, 1)
        port = free_port()
        policy, prm = PolicyWorker(cfg, path, num_threads=1), PRMWorker(cfg, path, num_threads=1)
        for worker in (policy, prm):
            worker.setup_distributed("127.0.0.1", port)  # one gloo group for the process; the second is a no-op
            worker.setup()
        rollout = RolloutWorker(cfg, path, num_threads=1)
        rollout.setup()
        self.rollout, self.policy, self.prm = (LocalGroup([rollout], "rollout"), LocalGroup([policy], "policy"),
                                               LocalGroup([prm], "prm"))
        self.prm_view = None
        self.weight_sync = WeightSync(cfg, self.policy, self.rollout)
        self.weights_version = 0
        self.pending = None


def state(group):
    return {k: v.clone() for k, v in group.call("export_state_dict").items()}


def moved(before, after) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("update", ["online", "frozen", "online_before"])
def test_one_step_runs_every_stage_in_order_and_trains_what_the_schedule_says(tiny_path, update, tmp_path):
    cfg = load_config(None, SIZES + [f"prm.update={update}", f"trainer.output_dir={tmp_path}"])
    steps = InProcessSteps(cfg, tiny_path)
    policy_before, prm_before = state(steps.policy), state(steps.prm)

    metrics = steps.step(1)

    timed = [k.split("/", 1)[1] for k in metrics if k.startswith("timing_s/") and k.split("/", 1)[1] in STAGES]
    expected = [s for s in STAGES if s != "rollout_wait" and (s != "prm_update_before" or update == "online_before")]
    assert sorted(timed, key=STAGES.index) == expected
    assert moved(policy_before, state(steps.policy))
    assert moved(prm_before, state(steps.prm)) == (update != "frozen")
    assert metrics["prm/updated"] == float(update != "frozen")
    assert torch.isfinite(torch.tensor(metrics["prm/td_loss"]))
    # the weight sync left the rollout worker with the policy's new weights
    assert steps.weights_version == 1 and steps.rollout.workers[0].weights_version == 1
    rollout_state = steps.rollout.workers[0].model.state_dict()
    assert all(torch.equal(rollout_state[k], v) for k, v in state(steps.policy).items())
    assert 0.0 <= metrics["reward/rule_mean"] <= 1.0 and metrics["response/length_mean"] > 0
    # every worker's timings reach the metrics: the rollout's too, and a frozen PRM's values pass
    assert metrics["timing_s/rollout_generate"] > 0 and metrics["timing_s/rollout_load_weights"] > 0
    assert metrics["timing_s/prm_values"] > 0 and metrics["timing_s/policy_update"] > 0
    assert all(not w.timings for g in (steps.rollout, steps.policy, steps.prm) for w in g.workers)


def test_a_short_prm_update_runs_alone_on_every_core_just_before_the_policy_update(tiny_path, tmp_path):
    """CPU, sync: beside the policy while unmeasured or long; alone on both cores, first, once measured short."""
    cfg = load_config(None, [s for s in SIZES if not s.startswith("trainer.torch_threads")]
                      + [f"trainer.output_dir={tmp_path}"])
    steps = InProcessSteps(cfg, tiny_path)
    steps.cores = CoreShare(cfg, 2)
    seen = []  # (role, torch threads) at the start of each update, in call order
    for group, method in ((steps.policy, "update"), (steps.prm, "td_update")):
        real = getattr(group.workers[0], method)

        def traced(*args, _real=real, _role=group.role, **kwargs):
            seen.append((_role, torch.get_num_threads()))
            return _real(*args, **kwargs)
        setattr(group.workers[0], method, traced)
    old_threads = torch.get_num_threads()
    try:
        first = steps.step(1)  # nothing measured yet: beside, one core each
        assert seen == [("policy", 1), ("prm", 1)] and first["update/prm_alone"] == 0.0
        assert steps.cores.prm_to_policy == pytest.approx(first["timing_s/prm_update"]
                                                          / first["timing_s/policy_update"])
        steps.cores.prm_to_policy = 0.1  # a short PRM update (e.g. prm.freeze_layers)
        seen.clear()
        policy_before, prm_before = state(steps.policy), state(steps.prm)
        second = steps.step(2)
        assert seen == [("prm", 2), ("policy", 2)] and second["update/prm_alone"] == 1.0
        assert moved(policy_before, state(steps.policy)) and moved(prm_before, state(steps.prm))
        assert second["prm/updated"] == 1.0 and second["timing_s/prm_update"] > 0
        steps.cores.prm_to_policy = 0.9  # long again: back beside the policy
        seen.clear()
        assert steps.step(3)["update/prm_alone"] == 0.0 and seen == [("policy", 1), ("prm", 1)]
    finally:
        torch.set_num_threads(old_threads)
