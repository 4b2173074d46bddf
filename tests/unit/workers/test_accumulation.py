"""How a batch splits over data-parallel ranks, mini-batches and gradient-accumulation chunks (review F4): no rank's
chunk may exceed the micro-batch, and every rank runs the same number of passes (ZeRO pairs their collectives)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tdrm_rl.workers.deepspeed import accumulation_steps, micro_batches_per_step, rows_for_rank, split_chunks


def passes(num_rows: int, world_size: int, mini_batches: int, micro: int) -> dict[int, list[list[int]]]:
    """Per rank: the row counts of its passes, per mini-batch, as PolicyWorker.update walks them (0: a stand-in)."""
    grad_accum = accumulation_steps(num_rows, world_size, mini_batches, micro)
    out = {}
    for rank in range(world_size):
        shard = rows_for_rank(num_rows, rank, world_size)
        out[rank] = [[len(c.rows) if c.real else 0 for c in split_chunks(len(mini), grad_accum)]
                     for mini in torch.tensor_split(torch.arange(len(shard)), mini_batches)]
    return out


def test_three_ranks_no_chunk_exceeds_the_micro_batch():
    # The review's case: 512 rows on 3 ranks at micro-batch 1. Rank 0 holds 171 rows.
    assert len(rows_for_rank(512, 0, 3)) == 171 and len(rows_for_rank(512, 2, 3)) == 170
    # Sizing from the floor (512 // 3 = 170 chunks) put two rows in one of rank 0's chunks.
    old = split_chunks(171, micro_batches_per_step(512 // 3, 1))
    assert max(len(c.rows) for c in old) == 2
    grad_accum = accumulation_steps(512, 3, 1, 1)
    assert grad_accum == 171
    by_rank = passes(512, 3, 1, 1)
    assert all(max(sizes) <= 1 for minis in by_rank.values() for sizes in minis)
    assert [sum(m.count(0) for m in by_rank[r]) for r in range(3)] == [0, 0, 1]  # rank 2 (170 rows): one stand-in


@pytest.mark.parametrize("world_size,mini_batches,micro", [(3, 1, 8), (3, 2, 3), (3, 4, 5), (5, 3, 2), (6, 1, 7)])
def test_the_recipe_shapes_split_within_the_micro_batch(world_size, mini_batches, micro):
    for num_rows in (96, 128, 256, 512, 1000):
        by_rank = passes(num_rows, world_size, mini_batches, micro)
        assert max(s for minis in by_rank.values() for m in minis for s in m) <= micro


def test_every_shape_splits_within_the_micro_batch_with_equal_passes_and_every_row_once():
    for num_rows, world_size, mini_batches, micro in itertools.product(range(1, 41), range(1, 6), range(1, 4),
                                                                       range(1, 6)):
        if num_rows < world_size * mini_batches:  # config validation refuses these (a rank would get no row)
            continue
        grad_accum = accumulation_steps(num_rows, world_size, mini_batches, micro)
        by_rank = passes(num_rows, world_size, mini_batches, micro)
        shape = (num_rows, world_size, mini_batches, micro)
        for rank, minis in by_rank.items():
            assert len(minis) == mini_batches and all(len(m) == grad_accum for m in minis), shape
            assert max(s for m in minis for s in m) <= micro, shape
            assert sum(s for m in minis for s in m) == len(rows_for_rank(num_rows, rank, world_size)), shape
        # As few passes as the largest shard allows: one fewer would overfill some chunk.
        largest_mini = math.ceil(math.ceil(num_rows / world_size) / mini_batches)
        assert grad_accum == math.ceil(largest_mini / micro), shape


def test_chunks_cover_the_rows_once_in_order_and_stand_ins_carry_no_row():
    chunks = split_chunks(5, 7)
    assert [c.real for c in chunks] == [True] * 5 + [False] * 2
    assert torch.cat([c.rows for c in chunks if c.real]).tolist() == [0, 1, 2, 3, 4]
    assert all(c.rows.tolist() == [0] for c in chunks if not c.real)  # runs on row 0, weighted by 0
    with pytest.raises(ValueError, match="at least one row"):
        split_chunks(0, 2)
