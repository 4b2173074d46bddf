import os
from contextlib import contextmanager

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


@pytest.fixture(scope="session")
def tiny_policy(tiny_cache, tmp_path_factory):
    from tdrm_rl.models.sft import ensure_policy

    cfg = tiny_config(tmp_path_factory.mktemp("sft"), tiny_cache)
    return ensure_policy(cfg, progress=False)


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
