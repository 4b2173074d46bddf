"""The device check script: its CUDA run (skipped without a GPU) and a CPU smoke run that keeps it working."""

import json

import pytest

from tests.gpu.check_cuda import main


@pytest.mark.gpu
def test_cuda_paths_pass_on_a_gpu(tmp_path):
    assert main(["--device", "cuda", "--size", "0.5b", "--out", str(tmp_path)]) == 0


def test_the_same_script_runs_on_cpu(tmp_path):
    assert main(["--device", "cpu", "--size", "tiny", "--out", str(tmp_path)]) == 0
    checks = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert {k: v["status"] for k, v in checks.items()} == {
        "hf_generate_bf16": "PASS", "prm_single_pass": "PASS", "logprob_memory": "SKIP", "deepspeed_policy": "PASS",
        "deepspeed_prm": "PASS", "cuda_ipc": "SKIP"}
    assert checks["deepspeed_policy"]["logprob_gap_after_sync"] < 1e-4 < checks["deepspeed_policy"]["logprob_gap_before_sync"]
