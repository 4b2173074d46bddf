"""Where vLLM's `reload` weight sync writes its one-load safetensors file (workers/weight_sync.py)."""

import os
import tempfile

import torch

from tdrm_rl.workers import weight_sync
from tdrm_rl.workers.weight_sync import remove_weights_file, weights_file_path, write_weights_file

STATE = {"w": torch.zeros(256, 256), "b": torch.zeros(256)}


def test_the_file_goes_to_shared_memory_when_it_has_room(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_sync, "SHM", str(tmp_path))
    a, b = weights_file_path(STATE), weights_file_path(STATE)
    assert os.path.dirname(a) == os.path.dirname(b) == str(tmp_path)
    assert a != b and a.endswith(".safetensors") and os.path.basename(a).startswith("tdrm-weights-")


def test_no_shared_memory_falls_back_to_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_sync, "SHM", str(tmp_path / "missing"))
    path = weights_file_path(STATE)
    try:
        assert os.path.dirname(path) == tempfile.gettempdir()
    finally:
        os.unlink(path)


def test_a_full_shared_memory_falls_back_to_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_sync, "SHM", str(tmp_path))
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    huge = {"w": torch.empty((free // 4) // 2 + 1, dtype=torch.float32, device="meta")}  # needs 2x its bytes
    path = weights_file_path(huge)
    try:
        assert os.path.dirname(path) == tempfile.gettempdir()
    finally:
        os.unlink(path)


def test_the_written_file_holds_a_tied_state_dict_and_is_removed(tmp_path, monkeypatch):
    """Policy rank 0 writes the file for the engines: a tied lm_head (one storage, two names) must be written."""
    from safetensors.torch import load_file

    monkeypatch.setattr(weight_sync, "SHM", str(tmp_path))
    emb = torch.randn(8, 4)
    state = {"embed.weight": emb, "lm_head.weight": emb, "norm.weight": torch.ones(4)}
    path = write_weights_file(state)
    back = load_file(path)
    assert os.path.dirname(path) == str(tmp_path)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    remove_weights_file(path)
    remove_weights_file(path)  # a second removal (the finally after a failed load) is harmless
    assert not os.path.exists(path)


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_sync, "SHM", str(tmp_path))
    try:
        write_weights_file({"w": torch.empty(4, device="meta")})  # no data to write
    except Exception:
        pass
    else:
        raise AssertionError("writing a meta tensor should fail")
    assert os.listdir(tmp_path) == []
