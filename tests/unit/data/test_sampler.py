"""The train sampler: seeded epochs over a finite set, exact state round trip, resume at an epoch boundary."""

import json

from tdrm_rl.config import DataConfig
from tdrm_rl.data.sampler import TrainSampler
from tdrm_rl.tasks import get_task


def keys(problems):
    return [p.prompt for p in problems]


def test_finite_set_visits_every_problem_once_per_epoch_in_a_new_order():
    task = get_task(DataConfig())
    sampler = TrainSampler(task, 8, seed=3)
    first, second = keys(sampler.next(8)), keys(sampler.next(8))
    pool = keys(task.train_set(8))
    assert sorted(first) == sorted(pool) == sorted(second)
    assert first != second  # reshuffled per epoch
    assert sampler.epoch == 1


def test_a_batch_crossing_the_boundary_takes_the_rest_of_the_epoch_first():
    task = get_task(DataConfig())
    a, b = TrainSampler(task, 8, seed=0), TrainSampler(task, 8, seed=0)
    assert keys(a.next(6) + a.next(6)) == keys(b.next(8) + b.next(4))
    assert (a.epoch, a.pos) == (1, 4)


def test_state_round_trip_resumes_exactly_at_an_epoch_boundary():
    task = get_task(DataConfig())
    run = TrainSampler(task, 8, seed=0)
    run.next(4), run.next(4)  # exactly one epoch
    state = json.loads(json.dumps(run.state_dict()))  # what a checkpoint stores
    expected = keys(run.next(4))
    resumed = TrainSampler(task, 8, seed=0)
    resumed.load_state_dict(state)
    got = keys(resumed.next(4))
    assert got == expected and len(got) == 4  # the next epoch, not an empty one
    assert resumed.epoch == 1


def test_endless_stream_state_round_trip():
    task = get_task(DataConfig())
    run = TrainSampler(task, 0, seed=0)
    run.next(5)
    state = json.loads(json.dumps(run.state_dict()))
    expected = keys(run.next(5))
    resumed = TrainSampler(task, 0, seed=0)
    resumed.load_state_dict(state)
    assert keys(resumed.next(5)) == expected
    assert resumed.epoch == 0


def test_a_changed_train_set_is_refused():
    task = get_task(DataConfig())
    state = TrainSampler(task, 8, seed=0).state_dict()
    try:
        TrainSampler(task, 10, seed=0).load_state_dict(state)
    except ValueError as e:
        assert "data.train_size" in str(e)
    else:
        raise AssertionError("a sampler state for another train set was accepted")
