"""The trainer roles' NaN guard and engine state, on a real in-process DeepSpeed engine (no Ray)."""

import pytest
import torch

from tests.unit.conftest import save_tiny_policy
from tdrm_rl.config import load_config
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.policy import PolicyWorker

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
         "model.intermediate_size=64", "rollout.prompts_per_step=2", "rollout.group_size=2",
         "policy.micro_batch_size=4"]  # 4 rows in one micro-batch: every backward is an optimizer step


@pytest.fixture(scope="module")
def worker(tok, tmp_path_factory):
    cfg = load_config(None, SMALL)
    path = save_tiny_policy(str(tmp_path_factory.mktemp("policy")), SMALL)
    w = PolicyWorker(cfg, path)
    w.setup_distributed("127.0.0.1", free_port())
    w.setup()
    return w


def snapshot(w):
    weights = {k: v.clone() for k, v in w.engine.module.state_dict().items()}
    moments = {k: s["exp_avg"].clone() for k, s in w.engine.optimizer.state_dict()["state"].items()}
    return weights, moments


def changed(before, after):
    return max((before[k] - after[k]).abs().max().item() for k in before)


def loss_of(w, scale=1.0):
    ids = torch.arange(5, 15).repeat(2, 1)
    return w.engine(input_ids=ids).logits.float().pow(2).mean() * scale


def test_finite_update_steps_and_nonfinite_ones_are_skipped(worker):
    w0, _ = snapshot(worker)
    worker.backward_and_step(loss_of(worker))
    w1, m1 = snapshot(worker)
    assert changed(w0, w1) > 0 and worker.pop_skipped_updates() == 0

    worker.backward_and_step(loss_of(worker, float("nan")))  # non-finite loss
    w2, m2 = snapshot(worker)
    assert changed(w1, w2) == 0 and all(torch.equal(m1[k], m2[k]) for k in m1)
    assert worker.pop_skipped_updates() == 1

    param = next(worker.engine.module.parameters())
    hook = param.register_hook(lambda g: g * float("inf"))  # finite loss, infinite gradient
    try:
        worker.backward_and_step(loss_of(worker))
    finally:
        hook.remove()
    w3, m3 = snapshot(worker)
    assert changed(w2, w3) == 0 and all(torch.equal(m2[k], m3[k]) for k in m2)
    assert worker.pop_skipped_updates() == 1

    worker.backward_and_step(loss_of(worker))  # and training goes on afterwards
    assert changed(w3, snapshot(worker)[0]) > 0 and worker.pop_skipped_updates() == 0


def test_engine_state_round_trip(worker, tmp_path):
    worker.backward_and_step(loss_of(worker))
    saved_w, saved_m = snapshot(worker)
    worker.save_state(str(tmp_path / "engine"))
    worker.backward_and_step(loss_of(worker))
    assert changed(saved_w, snapshot(worker)[0]) > 0
    worker.load_state(str(tmp_path / "engine"))
    w, m = snapshot(worker)
    assert changed(saved_w, w) == 0 and all(torch.equal(saved_m[k], m[k]) for k in m)
