"""Where vLLM's `reload` weight sync writes its one-load safetensors file (workers/rollout/vllm_engine.py)."""

import os
import tempfile

import torch

from tdrm_rl.workers.rollout import vllm_engine
from tdrm_rl.workers.rollout.vllm_engine import weights_file_path

STATE = {"w": torch.zeros(256, 256), "b": torch.zeros(256)}


def test_the_file_goes_to_shared_memory_when_it_has_room(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "SHM", str(tmp_path))
    a, b = weights_file_path(STATE), weights_file_path(STATE)
    assert os.path.dirname(a) == os.path.dirname(b) == str(tmp_path)
    assert a != b and a.endswith(".safetensors") and os.path.basename(a).startswith("tdrm-weights-")


def test_no_shared_memory_falls_back_to_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "SHM", str(tmp_path / "missing"))
    path = weights_file_path(STATE)
    try:
        assert os.path.dirname(path) == tempfile.gettempdir()
    finally:
        os.unlink(path)


def test_a_full_shared_memory_falls_back_to_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "SHM", str(tmp_path))
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    huge = {"w": torch.empty((free // 4) // 2 + 1, dtype=torch.float32, device="meta")}  # needs 2x its bytes
    path = weights_file_path(huge)
    try:
        assert os.path.dirname(path) == tempfile.gettempdir()
    finally:
        os.unlink(path)
