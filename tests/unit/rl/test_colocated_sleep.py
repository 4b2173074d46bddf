"""Colocated rollout sleeps once a step (review F16): the driver puts the engines to sleep before the first stage
that runs the trainers and before a checkpoint; weight loads, evaluation and the next rollout run on an engine that
stays awake. The real roles in this process (tests/unit/rl/test_stages.py), with the calls each worker receives
recorded in one list; on CPU the HF backend's sleep frees nothing, so only the order is under test here (vLLM's
own sleep needs a GPU: tests/e2e/test_weight_sync_gpu.py)."""

from __future__ import annotations

import pytest

from tdrm_rl.config import load_config
from tdrm_rl.rl.trainer import RLTrainer
from tdrm_rl.workers.group import LocalGroup
from tdrm_rl.workers.rollout.hf import RolloutWorker
from tdrm_rl.workers.weight_sync import WeightSync
from tests.unit.rl.test_stages import SIZES, InProcessSteps


class RecordingRollout(RolloutWorker):
    def __init__(self, *args, events: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events = events

    def sleep(self) -> None:
        self.events.append("rollout.sleep")
        super().sleep()

    def generate(self, *args, **kwargs):
        self.events.append("rollout.generate")
        return super().generate(*args, **kwargs)

    def update_weights(self, *args, **kwargs):
        self.events.append("rollout.update_weights")
        return super().update_weights(*args, **kwargs)


def steps_with_recorded_rollout(cfg, path: str, events: list) -> InProcessSteps:
    steps = InProcessSteps(cfg, path)
    rollout = RecordingRollout(cfg, path, num_threads=1, events=events)
    rollout.setup()
    steps.rollout = LocalGroup([rollout], "rollout")
    steps.weight_sync = WeightSync(cfg, steps.policy, steps.rollout)
    values = steps.prm.workers[0].values
    steps.prm.workers[0].values = lambda batch, **kw: (events.append("prm.values"), values(batch, **kw))[1]
    return steps


@pytest.mark.parametrize("colocated", [True, False])
def test_the_engines_sleep_once_a_step_before_the_trainers_run(tiny_path, tmp_path, colocated):
    cfg = load_config(None, SIZES + [f"trainer.output_dir={tmp_path}"])
    # What a colocated vLLM recipe sets (the HF backend on CPU stands in for the engine: the order is what counts).
    cfg.cluster.colocate = cfg.rollout.enable_sleep_mode = colocated
    events: list[str] = []
    steps = steps_with_recorded_rollout(cfg, tiny_path, events)
    for step in (1, 2):
        steps.step(step)
    one_step = ["rollout.generate"] + ["rollout.sleep"] * colocated + ["prm.values", "rollout.update_weights"]
    assert events == one_step * 2
    events.clear()
    RLTrainer.save_models(steps, str(tmp_path / "ckpt"))  # the trainer's checkpoint save on these groups
    assert events == ["rollout.sleep"] * colocated  # the saves gather weights on the trainers' GPUs
