import pytest

from tdrm_rl.config import load_config
from tests.e2e.conftest import RECIPE
from tdrm_rl.workers.placement import COLOCATED_GPU_SHARE, plan_layout


def layout(*overrides):
    return plan_layout(load_config(RECIPE, list(overrides)))


def test_cpu_layout_one_group_per_role_one_bundle_per_rank():
    lay = layout("policy.world_size=2", "cluster.policy_cpus=0.25")
    assert lay.groups == {"policy": [{"CPU": 0.25}, {"CPU": 0.25}], "prm": [{"CPU": 0.5}], "rollout": [{"CPU": 0.5}]}
    assert [(s.group, s.bundle, s.num_gpus) for s in lay.slots["policy"]] == [("policy", 0, 0.0), ("policy", 1, 0.0)]
    assert lay.totals() == {"CPU": 1.5}
    assert lay.strategy == "PACK"


def test_gpu_separate_layout_whole_gpus_and_a_group_per_tp_engine():
    lay = layout("cluster.gpus_per_node=8", "rollout.backend=vllm", "rollout.num_workers=2",
                 "rollout.tensor_parallel_size=2", "policy.world_size=3", "prm.world_size=1",
                 "cluster.placement_strategy=SPREAD")
    assert lay.totals()["GPU"] == 2 * 2 + 3 + 1
    assert all(b["GPU"] == 1.0 for b in lay.groups["policy"]) and len(lay.groups["policy"]) == 3
    # Each engine: its actor in bundle 0 holding no GPU, its TP workers captured into its own group.
    assert [s.group for s in lay.slots["rollout"]] == ["rollout-0", "rollout-1"]
    assert all(s.num_gpus == 0.0 and s.capture_child_tasks for s in lay.slots["rollout"])
    assert [len(lay.groups[f"rollout-{e}"]) for e in range(2)] == [2, 2]
    assert lay.strategy == "SPREAD"
    # A TP engine's GPUs are kept on one node whatever the recipe's strategy (review F17); the trainers' follow it.
    assert {g: lay.strategy_of(g) for g in lay.groups} == {"policy": "SPREAD", "prm": "SPREAD",
                                                          "rollout-0": "STRICT_PACK", "rollout-1": "STRICT_PACK"}


def test_gpu_colocated_layout_roles_share_each_gpu():
    lay = layout("cluster.gpus_per_node=4", "cluster.colocate=true", "rollout.backend=vllm", "rollout.num_workers=2",
                 "policy.world_size=2", "prm.world_size=1")
    assert list(lay.groups) == ["colocated"]
    assert [b["GPU"] for b in lay.groups["colocated"]] == [1.0, 1.0]
    assert lay.groups["colocated"][0]["CPU"] == pytest.approx(1.5) and lay.groups["colocated"][1]["CPU"] == 1.0
    for role in ("rollout", "policy", "prm"):
        assert all(s.num_gpus == COLOCATED_GPU_SHARE[role] for s in lay.slots[role])
    assert sum(COLOCATED_GPU_SHARE.values()) == pytest.approx(1.0)
    assert [s.bundle for s in lay.slots["policy"]] == [0, 1]
