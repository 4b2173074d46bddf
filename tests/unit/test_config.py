import os
import subprocess
import sys

import pytest

from tdrm_rl.config import ConfigError, load_config

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "grpo_tdrm.yaml")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_canonical_recipe_loads_with_paper_defaults():
    cfg = load_config(RECIPE)
    assert (cfg.reward.w_rule, cfg.reward.w_prm) == (0.8, 0.2)
    assert (cfg.prm.n_step, cfg.prm.gamma) == (2, 0.8)
    assert cfg.algorithm.estimator == "grpo"


def test_overrides_are_typed_and_applied():
    cfg = load_config(RECIPE, ["trainer.total_steps=3", "reward.w_prm=0.5", "prm.update=frozen"])
    assert cfg.trainer.total_steps == 3 and cfg.reward.w_prm == 0.5 and cfg.prm.update == "frozen"


def test_extends_merges_parent_then_child(tmp_path):
    parent = write(tmp_path, "base.yaml", "trainer:\n  total_steps: 7\nprm:\n  gamma: 0.5\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nprm:\n  gamma: 0.9\n")
    cfg = load_config(child)
    assert cfg.trainer.total_steps == 7 and cfg.prm.gamma == 0.9
    assert parent


@pytest.mark.parametrize("text, key", [
    ("prm:\n  gama: 0.8\n", "prm.gama"),
    ("trainer:\n  total_steps: many\n", "trainer.total_steps"),
    ("rewards:\n  w_rule: 1.0\n", "rewards"),
])
def test_recipe_errors_name_the_key_and_file(tmp_path, text, key):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value) and "bad.yaml" in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("policy.lrr=1e-5", "policy.lrr"),
    ("rollout.group_size=eight", "rollout.group_size"),
    ("prm.update=sometimes", "prm.update"),
    ("reward.prm_aggregate=median", "reward.prm_aggregate"),
    ("prm.gamma=1.5", "prm.gamma"),
    ("model.policy_path=/no/such/model", "model.policy_path"),
    ("policy.loss_agg=mean", "policy.loss_agg"),
    ("policy.kl_mode=both", "policy.kl_mode"),
    ("policy.dual_clip=0.5", "policy.dual_clip"),
    ("reward.dense=diff", "reward.dense"),
    ("algorithm.lam=2", "algorithm.lam"),
    ("prm.update_every=0", "prm.update_every"),
    ("trainer.save_every=-2", "trainer.save_every"),
])
def test_override_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(RECIPE, [override])
    assert key in str(err.value)


def test_save_every_minus_one_means_never_write_a_checkpoint():
    assert load_config(RECIPE, ["trainer.save_every=-1"]).trainer.save_every == -1


def test_missing_recipe_and_missing_parent_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    child = write(tmp_path, "child.yaml", "extends: gone.yaml\n")
    with pytest.raises(ConfigError, match="gone.yaml"):
        load_config(child)


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_cli_rejects_bad_key_before_any_worker_starts():
    proc = subprocess.run([sys.executable, "-m", "tdrm_rl.cli.main", "train", RECIPE, "prm.n_stpe=3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "prm.n_stpe" in proc.stderr and "Traceback" not in proc.stderr
    assert "Ray" not in proc.stdout


def test_cli_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "tdrm_rl.cli.main", "--help"], capture_output=True, text=True).stdout
    for command in ("train", "sft", "config"):
        assert command in out


def test_unknown_estimator_names_the_key_and_the_choices():
    with pytest.raises(ConfigError) as err:
        load_config(RECIPE, ["algorithm.estimator=ppo2"])
    assert "algorithm.estimator" in str(err.value) and "grpo" in str(err.value)


def test_hub_ids_validate_but_a_missing_local_name_does_not() -> None:
    """`owner/name` is a Hugging Face repo id (resolved at load time); a bare missing name is a typo."""
    cfg = load_config(RECIPE, ["model.policy_path=Qwen/Qwen2.5-0.5B-Instruct"])
    assert cfg.model.policy_path == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ConfigError, match="model.prm_path.*missing path: my_prm_checkpoint"):
        load_config(RECIPE, ["model.prm_path=my_prm_checkpoint"])


def test_ppo_recipe_extends_the_canonical_one_with_the_prm_as_critic():
    cfg = load_config(os.path.join(os.path.dirname(RECIPE), "ppo_tdrm.yaml"))
    assert cfg.algorithm.estimator == "ppo" and (cfg.algorithm.gamma, cfg.algorithm.lam) == (1.0, 0.95)
    assert (cfg.reward.w_rule, cfg.reward.w_prm) == (1.0, 0.0) and cfg.prm.update == "online"
    assert cfg.prm.n_step == 2  # inherited


def test_group_estimators_need_groups():
    with pytest.raises(ConfigError, match="'rollout.group_size' must be >= 2 for rloo"):
        load_config(RECIPE, ["algorithm.estimator=rloo", "rollout.group_size=1"])
    assert load_config(RECIPE, ["algorithm.estimator=ppo", "rollout.group_size=1"]).rollout.group_size == 1


@pytest.mark.parametrize("overrides,keys", [
    (["cluster.colocate=true", "trainer.async_rollout=true"], ("cluster.colocate", "trainer.async_rollout")),
    (["cluster.colocate=true", "rollout.backend=vllm", "rollout.weight_sync=nccl"],
     ("rollout.weight_sync", "cluster.colocate")),
    (["prm.bootstrap=ema", "prm.zero_stage=3"], ("prm.bootstrap", "prm.zero_stage")),
    (["rollout.prompts_per_step=1", "rollout.group_size=2", "policy.world_size=3"],
     ("rollout.prompts_per_step", "rollout.group_size", "policy.world_size")),
    (["rollout.prompts_per_step=2", "rollout.group_size=2", "policy.mini_batches=5"],
     ("rollout.prompts_per_step", "policy.mini_batches")),
    (["rollout.prompts_per_step=1", "rollout.group_size=2", "prm.world_size=3"], ("rollout.group_size", "prm.world_size")),
])
def test_layouts_that_cannot_work_are_rejected_naming_the_keys(overrides, keys):
    """Review F15 (and F4's floor: every rank needs a row in every mini-batch)."""
    with pytest.raises(ConfigError) as err:
        load_config(RECIPE, overrides)
    for key in keys:
        assert key in str(err.value), (key, str(err.value))


@pytest.mark.parametrize("overrides", [
    ["cluster.colocate=true", "rollout.backend=vllm", "rollout.weight_sync=auto"],
    ["cluster.colocate=true", "rollout.backend=vllm", "rollout.weight_sync=ipc"],
    ["trainer.async_rollout=true", "rollout.backend=vllm", "rollout.weight_sync=nccl"],
    ["prm.bootstrap=ema", "prm.zero_stage=2"],
    ["prm.bootstrap=online", "prm.zero_stage=3"],
    ["rollout.prompts_per_step=1", "rollout.group_size=3", "policy.world_size=3", "prm.world_size=3"],
])
def test_the_neighbouring_layouts_still_validate(overrides):
    load_config(RECIPE, overrides)
