"""Where a run's outputs go (review F12): the driver makes trainer.output_dir absolute for every actor, and inside a
Ray job with a working dir (where the current folder is Ray's temporary per-node copy) a relative one is refused
with one line naming the key, before anything starts."""

import json
import os

import pytest

from tdrm_rl.cli.main import main
from tdrm_rl.cli.runtime import ClusterError, resolve_output_dir
from tdrm_rl.config import load_config

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "recipes", "grpo_tdrm.yaml")
# What Ray's job supervisor puts in the driver's environment for `ray job submit --working-dir .` (job_supervisor.py).
RAY_JOB_ENV = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123456789abcdef.zip"}, "metadata": {}})


def test_a_relative_output_dir_becomes_absolute_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = load_config(None, ["trainer.output_dir=runs/x"])
    assert resolve_output_dir(cfg) == f"outputs: {tmp_path}/runs/x"
    assert cfg.trainer.output_dir == os.path.join(str(tmp_path), "runs", "x")
    cfg = load_config(None, ["trainer.output_dir=runs/x", "cluster.address=10.0.0.1:6379"])
    assert "storage every node mounts" in resolve_output_dir(cfg)  # joining a cluster: say where shards land


def test_inside_a_ray_job_a_relative_output_dir_is_refused_and_an_absolute_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", RAY_JOB_ENV)
    with pytest.raises(ClusterError, match=r"trainer.output_dir=runs/x is relative.*/shared/runs/x"):
        resolve_output_dir(load_config(None, ["trainer.output_dir=runs/x"]))
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}/out"])
    resolve_output_dir(cfg)
    assert cfg.trainer.output_dir == f"{tmp_path}/out"
    # A job without a working dir runs where it was started: a relative path is resolved as usual.
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}, "metadata": {}}))
    resolve_output_dir(load_config(None, ["trainer.output_dir=runs/x"]))


def test_the_train_command_refuses_it_in_one_line_before_starting_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", RAY_JOB_ENV)
    assert main(["train", RECIPE, "trainer.output_dir=runs/job"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trainer.output_dir=runs/job is relative" in err[0], err
    assert not os.path.exists(tmp_path / "runs")  # nothing was written, no warm start, no Ray
