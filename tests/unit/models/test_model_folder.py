"""Model folders are checked before any warm start or Ray: config, tokenizer and safetensors weights, pickled
weights refused, a hub id missing from the offline cache named with `hf download`; the CLI prints one line."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from tdrm_rl.cli.main import main
from tdrm_rl.config import ModelConfig
from tdrm_rl.models.load import ModelFolderError, build_tiny_policy, check_model_folder

SMALL = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")


@pytest.fixture(scope="module")
def good_dir(tok, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("good"))
    build_tiny_policy(tok, SMALL, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def variant(good_dir: str, tmp_path, drop: tuple[str, ...] = (), pickled: bool = False) -> str:
    path = str(tmp_path / "model")
    shutil.copytree(good_dir, path)
    for name in drop:
        os.remove(os.path.join(path, name))
    if pickled:
        torch.save({"w": torch.zeros(2)}, os.path.join(path, "pytorch_model.bin"))
    return path


def test_a_complete_folder_passes(good_dir):
    assert check_model_folder(good_dir, "model.policy_path") == good_dir


@pytest.mark.parametrize("drop, words", [
    (("config.json",), "no config.json"),
    (("tokenizer.json", "tokenizer_config.json"), "no tokenizer"),
    (("tokenizer.json",), "tokenizer_config.json but no tokenizer.json and none of its vocabulary files"),
    (("model.safetensors",), "no *.safetensors weights"),
])
def test_a_missing_part_is_named_with_the_key_and_folder(good_dir, tmp_path, drop, words):
    path = variant(good_dir, tmp_path, drop)
    with pytest.raises(ModelFolderError) as e:
        check_model_folder(path, "model.prm_path")
    msg = str(e.value)
    assert f"model.prm_path={path}" in msg and words in msg and "\n" not in msg


def test_a_slow_tokenizer_with_its_vocabulary_passes(good_dir, tmp_path):
    path = variant(good_dir, tmp_path, ("tokenizer.json",))
    for name in ("vocab.json", "merges.txt"):
        open(os.path.join(path, name), "w").close()
    assert check_model_folder(path, "model.policy_path") == path


def test_pickled_only_weights_are_refused_as_such(good_dir, tmp_path):
    path = variant(good_dir, tmp_path, ("model.safetensors", "tokenizer.json", "tokenizer_config.json"), pickled=True)
    with pytest.raises(ModelFolderError) as e:
        check_model_folder(path, "model.policy_path")
    msg = str(e.value)
    assert "only torch-serialised weights (pytorch_model.bin)" in msg and "refused" in msg and "can run code" in msg
    assert "safetensors" in msg
    assert "no tokenizer" in msg  # everything missing, in one line


def test_pickled_weights_beside_safetensors_are_fine(good_dir, tmp_path):
    path = variant(good_dir, tmp_path, pickled=True)
    assert check_model_folder(path, "model.policy_path") == path


def test_a_hub_id_missing_from_the_offline_cache_says_hf_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "tdrm-nobody/no-such-model-3f9a"
    with pytest.raises(ModelFolderError) as e:
        check_model_folder(hub_id, "model.policy_path")
    msg = str(e.value)
    assert f"model.policy_path={hub_id}" in msg and f"`hf download {hub_id}`" in msg


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelFolderError, match="no such folder"):
        check_model_folder(str(tmp_path / "nothing"), "model.policy_path")


def cli_line(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return code, err[0]


@pytest.mark.parametrize("key", ["model.policy_path", "model.prm_path"])
def test_train_refuses_a_pickled_folder_before_the_warm_start_and_ray(good_dir, tmp_path, capsys, key):
    path = variant(good_dir, tmp_path, ("model.safetensors",), pickled=True)
    code, line = cli_line(capsys, "train", RECIPE, f"{key}={path}", f"model.cache_dir={tmp_path}/cache",
                          f"trainer.output_dir={tmp_path}/run", "trainer.progress=false")
    assert code == 2 and line.startswith("tdrm-rl: model error: ") and f"{key}={path}" in line
    assert "pytorch_model.bin" in line
    assert not os.path.exists(tmp_path / "cache") and not os.path.exists(tmp_path / "run")  # no SFT, no run


def test_an_offline_command_checks_the_model_too(good_dir, tmp_path, capsys):
    path = variant(good_dir, tmp_path, ("config.json",))
    code, line = cli_line(capsys, "rollouts", RECIPE, "--out", str(tmp_path / "r.jsonl"), f"model.policy_path={path}",
                          f"model.cache_dir={tmp_path}/cache")
    assert code == 2 and "no config.json" in line and f"model.policy_path={path}" in line
