"""Every node needs the model (review F13): a role whose node cannot resolve its model fails at its first call
(stage 'start', before any role loads weights), naming the node and what to do."""

import re

import pytest

from tdrm_rl.config import load_config
from tdrm_rl.workers.policy import PolicyWorker
from tdrm_rl.workers.rollout.hf import RolloutWorker


def test_a_hub_id_missing_from_this_nodes_cache_fails_at_start_naming_the_node(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    cfg = load_config(None, [])
    for worker in (PolicyWorker(cfg, "tdrm-test/not-in-any-cache"), RolloutWorker(cfg, "tdrm-test/not-in-any-cache")):
        with pytest.raises(FileNotFoundError) as err:
            worker.ready()
        message = str(err.value)
        assert re.match(r"node [0-9a-f.:]+: (policy|rollout) model 'tdrm-test/not-in-any-cache'", message), message
        assert "hf download tdrm-test/not-in-any-cache" in message and "HF_HUB_OFFLINE=0" in message


def test_a_local_checkpoint_is_ready(tiny_path):
    assert PolicyWorker(load_config(None, []), tiny_path).ready()
