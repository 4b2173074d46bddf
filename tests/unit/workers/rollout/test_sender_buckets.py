"""The policy's side of the nccl sync builds flat buckets on the sending rank only (review F6, Q1): the other ranks
join each bucket's gather (under ZeRO-3 a collective) but copy nothing, where each used to build every bucket it never
sent. Under ZeRO-2 / no ZeRO there is no gather; the plan and the flat bucket are the module's parameters in order."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from tdrm_rl.workers.rollout.vllm_extension import unflatten_bucket
from tdrm_rl.workers.weight_sync import WeightSender


class Sender(WeightSender):
    def __init__(self, rank: int, module: torch.nn.Module) -> None:
        self.rank, self.role = rank, "policy"
        self.engine = SimpleNamespace(module=module, zero_optimization_partition_weights=lambda: False)


def test_only_the_sending_rank_builds_the_flat_buckets():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    plan = Sender(0, module).weight_plan(bucket_bytes=16 * 8 * 4)  # a few buckets
    assert len(plan) > 1
    built = list(Sender(0, module)._flat_buckets(plan, build=True))
    assert list(Sender(1, module)._flat_buckets(plan, build=False)) == [None] * len(plan)
    received = dict(kv for flat, bucket in zip(built, plan) for kv in unflatten_bucket(flat, bucket))
    params = dict(module.named_parameters())
    assert received.keys() == params.keys() and all(torch.equal(received[n], params[n]) for n in params)
