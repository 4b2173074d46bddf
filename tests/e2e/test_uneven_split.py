"""A batch that three ranks cannot split evenly (review F4), on a real three-rank DeepSpeed ZeRO-3 policy group over
Ray (gloo): no rank's accumulation chunk exceeds policy.micro_batch_size, every rank runs the same number of passes
(a stand-in pass on the short ranks keeps ZeRO-3's gathers paired), and the ranks agree after the step."""

import torch

from tdrm_rl.config import load_config
from tdrm_rl.workers.deepspeed import rows_for_rank
from tdrm_rl.workers.group import WorkerGroup
from tdrm_rl.workers.placement import Placement
from tdrm_rl.workers.policy import PolicyWorker
from tests.e2e.conftest import RECIPE
from tests.e2e.test_multirank import make_batch, random_policy  # noqa: F401  (a fixture)


def test_three_ranks_split_sixteen_rows_within_the_micro_batch(ray_local, tmp_path, random_policy):  # noqa: F811
    # 16 rows on 3 ranks: shards of 6, 5 and 5. At micro-batch 1 the old sizing (16 // 3 = 5 passes) put two rows
    # in one of rank 0's chunks; now every rank runs 6 passes, the 5-row ranks one of them a stand-in.
    cfg = load_config(RECIPE, ["policy.world_size=3", "policy.zero_stage=3", "rollout.prompts_per_step=4",
                               "rollout.group_size=4", "policy.micro_batch_size=1", "policy.lr=1e-3",
                               "cluster.rollout_cpus=0.2", "cluster.prm_cpus=0.2",  # placement counts every role
                               f"trainer.output_dir={tmp_path}"])
    placement = Placement(cfg)
    group = WorkerGroup(PolicyWorker, "policy", cfg, world_size=3, distributed=True, placement=placement,
                        model_path=random_policy, num_threads=1)
    try:
        before = group.run("export_state_dict", True)  # every rank's copy, to compare ranks
        metrics = group.run("update", make_batch(16))
        chunks = group.run("pop_chunk_rows")
        after = group.run("export_state_dict", True)
        assert [len(c) for c in chunks] == [6, 6, 6]
        assert max(max(c) for c in chunks) == 1
        assert [sum(c) for c in chunks] == [len(rows_for_rank(16, r, 3)) for r in range(3)] == [6, 5, 5]
        assert [c.count(0) for c in chunks] == [0, 1, 1]
        assert all(m["policy/skipped_updates"] == 0 and m["policy/loss"] == m["policy/loss"] for m in metrics)
        for name in after[0]:
            assert torch.equal(after[0][name], after[1][name]) and torch.equal(after[0][name], after[2][name]), name
        assert max((after[0][k] - before[0][k]).abs().max().item() for k in after[0]) > 0
    finally:
        group.kill()
        placement.remove()
