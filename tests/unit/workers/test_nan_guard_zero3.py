"""The NaN guard under ZeRO-3 (review F9), on a real in-process DeepSpeed engine (one gloo rank, no Ray).

ZeRO-3 calls the optimizer's `step()` once per sub-group; with a small `zero_optimization.sub_group_size` the tiny
policy has several. A skipped update must leave every parameter and every Adam moment of every sub-group untouched.
"""

import pytest
import torch

from tests.unit.conftest import save_tiny_policy
from tdrm_rl.config import load_config
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.deepspeed import GuardedAdamW
from tdrm_rl.workers.policy import PolicyWorker

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=1",
         "model.intermediate_size=64", "rollout.prompts_per_step=2", "rollout.group_size=2",
         "policy.micro_batch_size=4", "policy.zero_stage=3"]


class SubGroupedPolicy(PolicyWorker):
    zero_overrides = {"sub_group_size": 4000}


@pytest.fixture(scope="module")
def worker(tok, tmp_path_factory):
    cfg = load_config(None, SMALL)
    path = save_tiny_policy(str(tmp_path_factory.mktemp("policy")), SMALL)
    w = SubGroupedPolicy(cfg, path)
    w.setup_distributed("127.0.0.1", free_port())
    w.setup()
    assert w.engine.zero_optimization_stage() == 3
    return w


@pytest.fixture
def step_calls(monkeypatch):
    """How often DeepSpeed calls the optimizer's step() (skipped or not) and how often AdamW really steps."""
    calls = {"step": 0, "applied": 0}
    guarded, adamw = GuardedAdamW.step, torch.optim.AdamW.step

    def counted(self, closure=None):
        calls["step"] += 1
        return guarded(self, closure)

    def applied(self, closure=None):
        calls["applied"] += 1
        return adamw(self, closure)

    monkeypatch.setattr(GuardedAdamW, "step", counted)
    monkeypatch.setattr(torch.optim.AdamW, "step", applied)
    return calls


def snapshot(w):
    """Every weight (the module's gathered parameters and ZeRO-3's fp32 master partitions) and every moment."""
    weights = {f"module.{k}": v.clone() for k, v in w.export_state_dict().items()}
    for i, flat in enumerate(w.engine.optimizer.fp32_partitioned_groups_flat):
        weights[f"fp32.{i}"] = flat.detach().clone()
    moments = {}
    for i, state in enumerate(w.guarded_optimizer.state.values()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            moments[f"{i}.{key}"] = torch.as_tensor(state[key]).clone()
    return weights, moments


def differ(a, b):
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def loss_of(w, scale=1.0):
    ids = torch.arange(5, 15).repeat(2, 1)
    return w.engine(input_ids=ids).logits.float().pow(2).mean() * scale


def test_a_skipped_update_leaves_every_sub_group_untouched(worker, step_calls):
    groups = len(worker.engine.optimizer.fp32_partitioned_groups_flat)
    assert groups >= 3, f"sub_group_size did not split the tiny policy ({groups} sub-groups)"

    w0, _ = snapshot(worker)
    worker.backward_and_step(loss_of(worker))  # a good step: every sub-group moves and gets its moments
    w1, m1 = snapshot(worker)
    assert step_calls == {"step": groups, "applied": groups}
    assert len(differ(w0, w1)) == len(w0) and len(m1) == 3 * groups
    assert worker.pop_skipped_updates() == 0

    # Another rank's loss was non-finite (the all-reduced flag), this rank's gradients are finite: DeepSpeed's own
    # overflow check sees nothing, so only the guard stops the update, in every sub-group.
    worker._nonfinite = True
    worker.backward_and_step(loss_of(worker))
    w2, m2 = snapshot(worker)
    assert step_calls == {"step": 2 * groups, "applied": groups}  # every sub-group's step() was called, none applied
    assert differ(w1, w2) == [] and differ(m1, m2) == []
    assert worker.pop_skipped_updates() == 1

    # This rank's own loss is NaN: dropped too (ZeRO-3's overflow check also sees the NaN gradients).
    worker.backward_and_step(loss_of(worker, float("nan")))
    w3, m3 = snapshot(worker)
    assert step_calls["applied"] == groups
    assert differ(w1, w3) == [] and differ(m1, m3) == []
    assert worker.pop_skipped_updates() == 1

    worker.backward_and_step(loss_of(worker))  # the guard lifts: the next good step moves every sub-group again
    w4, m4 = snapshot(worker)
    assert step_calls["applied"] == 2 * groups
    assert len(differ(w3, w4)) == len(w3) and len(differ(m3, m4)) == len(m3)
    assert worker.pop_skipped_updates() == 0
