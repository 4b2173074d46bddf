"""Plans of real layouts: where each process goes, what a GPU must hold, a case by hand, and train's check."""

from __future__ import annotations

import os

import pytest

from tdrm_rl.config import load_config
from tdrm_rl.sizing import PlanError, build_plan, check_plan, largest_fitting
from tdrm_rl.sizing.memory import GiB
from tests.unit.sizing.test_memory import SHAPE

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
R1_7B = os.path.join(ROOT, "recipes", "deepseek-r1-distill", "grpo_tdrm_qwen_7b.yaml")
R1_15B = os.path.join(ROOT, "recipes", "deepseek-r1-distill", "grpo_tdrm_qwen_1.5b.yaml")
Z1 = os.path.join(ROOT, "recipes", "glm4", "grpo_tdrm_glm_z1_9b.yaml")
Q05 = os.path.join(ROOT, "recipes", "qwen2.5", "grpo_tdrm_0.5b.yaml")
COLOCATED_1GPU = ["cluster.colocate=true", "cluster.num_gpus=1", "rollout.num_workers=1", "policy.world_size=1",
                  "prm.world_size=1", "rollout.enable_sleep_mode=true", "rollout.gpu_memory_utilization=0.3"]


def labels(plan) -> dict[str, list[str]]:
    return {g.name: [u.label for u in g.usages] for g in plan.gpus}


def test_separate_roles_get_one_gpu_per_rank_and_engine() -> None:
    plan = build_plan(load_config(R1_7B))
    assert labels(plan) == {"GPU 0": ["policy[0]"], "GPU 1": ["policy[1]"], "GPU 2": ["policy[2]"],
                            "GPU 3": ["prm[0]"], "GPU 4": ["prm[1]"], "GPU 5": ["prm[2]"],
                            "GPU 6": ["rollout[0]"], "GPU 7": ["rollout[1]"]}
    assert plan.sync_mode == "nccl"


def test_a_tensor_parallel_engine_spans_its_gpus_with_a_share_of_the_weights() -> None:
    plan = build_plan(load_config(R1_7B, ["rollout.num_workers=1", "rollout.tensor_parallel_size=2"]))
    engine_gpus = [name for name, held in labels(plan).items() if held == ["rollout[0]"]]
    assert engine_gpus == ["GPU 6", "GPU 7"]
    weights = next(t.bytes for t in plan.roles["rollout"][0].breakdown if t.name == "weights")
    assert weights == 2 * plan.policy_shape.params() / 2


def test_a_colocated_gpu_holds_every_process_peak_at_once() -> None:
    plan = build_plan(load_config(Q05, COLOCATED_1GPU + ["rollout.gpu_memory_utilization=0.6"]))
    assert labels(plan) == {"GPU 0": ["rollout[0]", "policy[0]", "prm[0]"]}
    gpu = plan.gpus[0]
    assert gpu.need() == pytest.approx(sum(u.peak() for u in gpu.usages))
    assert plan.sync_mode == "ipc"  # every IPC bucket stays alive: a second bf16 copy of the policy
    ipc = next(t.bytes for t in plan.roles["policy"][0].phases["weight sync"] if t.name == "IPC buckets")
    assert ipc == 2 * plan.policy_shape.params()
    assert not plan.fits and "GPU 0 (rollout[0], policy[0], prm[0])" in plan.problems[0]


def test_a_policy_rank_by_hand() -> None:
    """SHAPE on one GPU per role, ZeRO-2, no checkpointing, micro 2 x (100 prompt + 400 response) = 1000 tokens."""
    cfg = load_config(None, ["cluster.num_gpus_per_worker=1", "rollout.backend=vllm", "policy.zero_stage=2",
                             "policy.micro_batch_size=2", "cluster.plan_prompt_tokens=100",
                             "rollout.max_new_tokens=400"])
    policy = build_plan(cfg, SHAPE, SHAPE).roles["policy"][0]
    params = 1_404_100
    assert policy.resident_bytes() == 16 * params + 1e9  # bf16 weights + grads, 12 B states, the reduce bucket
    update = 1000 * (10 * 4600 + 1400) + 20 * 1000 * 1000  # activations + one 1000-token chunk of logits
    assert policy.phase_bytes("update") == update
    # the largest phase is the nccl sync: one 256 MiB flat bucket (no tensor of SHAPE is larger)
    assert policy.peak_phase() == "weight sync"
    assert policy.peak() == pytest.approx(16 * params + 1e9 + 256 * 2 ** 20 * 1.1 + 1 * GiB)


def test_the_largest_fitting_value_fits_and_one_more_does_not() -> None:
    plan = build_plan(load_config(R1_15B, ["prm.micro_batch_size=48"]))  # the PRM overflows
    assert not plan.fits
    best = largest_fitting(plan, "prm.micro_batch_size")
    assert best == 44
    assert build_plan(load_config(R1_15B, [f"prm.micro_batch_size={best}"])).fits
    longest = largest_fitting(plan, "rollout.max_new_tokens")
    assert build_plan(load_config(R1_15B, ["prm.micro_batch_size=48", f"rollout.max_new_tokens={longest}"])).fits
    assert not build_plan(load_config(R1_15B, ["prm.micro_batch_size=48",
                                               f"rollout.max_new_tokens={longest + 1}"])).fits


def test_train_check_refuses_a_layout_that_cannot_fit_with_one_line() -> None:
    old_z1 = load_config(Z1, ["prm.world_size=3", "rollout.num_workers=2", "prm.micro_batch_size=4"])
    with pytest.raises(PlanError) as err:
        check_plan(old_z1, source="grpo_tdrm_glm_z1_9b.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "GPU 3 (prm[0]) needs" in message and "cluster.skip_plan=true" in message
    assert "rollout.max_new_tokens=" in message  # what would fit


def test_skip_plan_and_cpu_layouts_are_not_checked() -> None:
    assert check_plan(load_config(Z1, ["prm.world_size=3", "rollout.num_workers=2", "cluster.skip_plan=true"])) is None
    assert check_plan(load_config(None)) is None
    assert build_plan(load_config(None)).gpus == []


def test_a_model_the_plan_cannot_size_is_trained_unchecked_with_a_warning(tmp_path, caplog) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "mamba"}')
    cfg = load_config(R1_7B, [f"model.policy_path={tmp_path}"])
    with caplog.at_level("WARNING"):
        assert check_plan(cfg) is None
    assert "GPU memory not checked" in caplog.text and "model_type 'mamba'" in caplog.text
