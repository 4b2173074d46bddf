import json
import os
from contextlib import ExitStack, contextmanager

import pytest

from tdrm_rl.config import load_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")

# Small but real: a short SFT warm start so some answers are right and GRPO groups carry signal.
TINY = ["sft.steps=150", "data.eval_size=32", "rollout.prompts_per_step=4", "rollout.group_size=4",
        "policy.micro_batch_size=8", "prm.micro_batch_size=8", "trainer.total_steps=2", "trainer.eval_every=1",
        "trainer.progress=false",
        # The e2e runs test other things: no offline PRM warm-up (tests/unit/prm_tools/test_warmup.py covers it).
        "prm_warmup.enabled=false"]
# Deterministic and small: one torch thread per worker, few eval problems, no TensorBoard.
FAST = TINY + ["data.eval_size=8", "trainer.torch_threads=1", "trainer.loggers=[jsonl]"]

# The uninterrupted run that resume and fault tests must end on (reference_run): 4 steps of 4 problems over a pool
# of 8 (step 2 ends epoch 0), a checkpoint after every step, all kept, evaluation only at the start and the end.
REFERENCE_STEPS = 4
REFERENCE = [f"trainer.total_steps={REFERENCE_STEPS}", "data.train_size=8", "trainer.save_every=1",
             "trainer.keep_checkpoints=0", "trainer.eval_every=100", "data.eval_size=4"]


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    # TDRM_TEST_MODEL_CACHE: keep the SFT warm start between sessions (its folder name hashes every SFT knob).
    return os.environ.get("TDRM_TEST_MODEL_CACHE") or str(tmp_path_factory.mktemp("model-cache"))


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e runs the real stack on a local Ray instance: `-m "not e2e"` leaves it out."""
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


def tiny_config(tmp_path, cache_dir, *extra):
    return load_config(RECIPE, TINY + [f"model.cache_dir={cache_dir}", f"trainer.output_dir={tmp_path}/run", *extra])


def run_args(tmp_path, name: str, tiny_cache: str, tiny_policy: str, *extra: str) -> list[str]:
    """The overrides of a FAST run of the warm-started tiny policy into tmp_path/name (CLI or load_config)."""
    return FAST + [f"model.cache_dir={tiny_cache}", f"model.policy_path={tiny_policy}",
                   f"trainer.output_dir={tmp_path}/{name}", *extra]


def metric_rows(run_dir: str) -> dict[int, dict]:
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    by_step = {r["step"]: r for r in rows}
    assert len(by_step) == len(rows), "a step was logged twice"
    return by_step


@pytest.fixture(scope="session")
def tiny_policy(tiny_cache, tmp_path_factory):
    from tdrm_rl.models.sft import ensure_policy

    cfg = tiny_config(tmp_path_factory.mktemp("sft"), tiny_cache)
    return ensure_policy(cfg, progress=False)


@pytest.fixture(scope="session")
def reference_run(ray_local, tmp_path_factory, tiny_cache, tiny_policy) -> str:
    """The output folder of one uninterrupted REFERENCE run (in this session's Ray instance), trained once for every
    test whose faulted or resumed run must end on its metrics and weights: tests/e2e/test_faults.py and
    test_reliability.py's SIGKILL-then-resume. Read it, never write into it."""
    from tdrm_rl.rl.trainer import RLTrainer

    cfg = load_config(RECIPE, run_args(tmp_path_factory.mktemp("reference"), "straight", tiny_cache, tiny_policy,
                                       *REFERENCE))
    with RLTrainer(cfg, tiny_policy) as trainer:
        trainer.fit()
    rows = metric_rows(cfg.trainer.output_dir)
    assert sorted(rows) == list(range(REFERENCE_STEPS + 1))
    assert all(row.get("verify/timeouts", 0) == 0 for row in rows.values())
    return cfg.trainer.output_dir


def require_vllm():
    # `make test` sets TDRM_REQUIRE_VLLM=1: there a missing vLLM is a failure, not a skip.
    if os.environ.get("TDRM_REQUIRE_VLLM") == "1":
        import vllm  # noqa: F401
    else:
        pytest.importorskip("vllm")


@contextmanager
def rollout_backends(cfg, policy_path: str):
    """Both rollout backends in this process on the same weights: {"hf": RolloutWorker, "vllm": VLLMRolloutWorker}.
    The vLLM engine's core process is stopped on exit, not at interpreter exit."""
    from tdrm_rl.workers.rollout import rollout_worker_class

    require_vllm()
    workers = {}
    try:
        for name in ("hf", "vllm"):
            worker = rollout_worker_class(name)(cfg, policy_path, num_threads=1)
            worker.setup()
            workers[name] = worker
        yield workers
    finally:
        if "vllm" in workers:
            workers["vllm"].llm.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="session")
def _shared_backends():
    """Holder of the one pair of rollout_backends that tiny_backends shares; whatever is still open at the end of the
    session is closed then."""
    held: dict = {}
    yield held
    if "stack" in held:
        held.pop("stack").close()


@pytest.fixture(scope="module")
def tiny_backends(request, _shared_backends, tmp_path_factory, tiny_cache, tiny_policy):
    """(cfg, rollout_backends on the warm start): one HF worker and one vLLM engine for every module that asks, not
    one per module (test_rollout_contract.py, test_rollout_prefix_cache.py). Each module gets them as they started:
    the weights, weights_version and tokenizers a module changed are put back when it ends. The engine is stopped
    after the last module of the session that uses it."""
    held = _shared_backends
    if "stack" not in held:
        cfg = tiny_config(tmp_path_factory.mktemp("backends"), tiny_cache)
        stack = ExitStack()
        workers = stack.enter_context(rollout_backends(cfg, tiny_policy))
        hf = workers["hf"]
        held.update(stack=stack, cfg=cfg, workers=workers, version=hf.weights_version,
                    state={k: v.detach().clone() for k, v in hf.model.state_dict().items()},
                    tokenizers={name: w.tokenizer for name, w in workers.items()})
    yield held["cfg"], held["workers"]
    for name, worker in held["workers"].items():
        worker.tokenizer = held["tokenizers"][name]
        assert worker.update_weights(held["state"], held["version"]) == held["version"]
    items = request.session.items
    mine = [i for i, item in enumerate(items) if item.module is request.module]
    if not any("tiny_backends" in item.fixturenames for item in items[max(mine) + 1:]):
        held.pop("stack").close()
        held.clear()


@pytest.fixture(scope="module")
def cfg(tiny_backends):
    """The config of tiny_backends' pair (for the modules that use it)."""
    return tiny_backends[0]


@pytest.fixture(scope="module")
def backends(tiny_backends):
    """tiny_backends' rollout backends by name ("hf", "vllm")."""
    return tiny_backends[1]
