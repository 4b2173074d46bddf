"""TRL's GRPOTrainer vs tdrm-rl (PRM online, PRM off) at the same settings, alternating step by step.

Same tiny policy checkpoint, arithmetic task and verifier, prompts per step, group size, max new
tokens, one optimizer step per batch (2 micro-batches of 64), no KL, HF generation on CPU. TRL runs
in this (driver) process on all cores; tdrm-rl runs its Ray actors, idle while TRL steps. After each
TRL step a callback runs one tdrm-rl step with the PRM online, then one with it off, so the three
alternate under the same machine load. `trl` lives in the bench venv only (Makefile: .venv-bench).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any, Sequence

from bench.common import Table, median
from bench.rl_step import STAGES, BenchTrainer
from tdrm_rl.config import RunConfig

# issue 18: at least TRL's throughput with the PRM online (moonshot 1.5x)
TRL_TARGET = "tdrm-rl (PRM online) >= 1.0x TRL GRPOTrainer trajectories/s (moonshot 1.5x)"


def prm_off(trainer: BenchTrainer, off: bool) -> None:
    """PRM off: no TD update and no PRM term in the reward (the PRM still scores, as the driver always does)."""
    from tdrm_rl.rl.schedule import PRMSchedule

    trainer.cfg.prm.update = "frozen" if off else "online"
    trainer.schedule = PRMSchedule(trainer.cfg.prm)  # it reads prm.update once, when built
    trainer.cfg.reward.w_prm, trainer.cfg.reward.w_rule = (0.0, 1.0) if off else (0.2, 0.8)


def grpo_trainer(cfg: RunConfig, policy_path: str, task: Any, problems: Sequence[Any], trajectories: int,
                 max_steps: int, callbacks: list, seed: int = 0, max_new_tokens: int | None = None) -> Any:
    """TRL's GRPOTrainer on `problems` (taken in order, `trajectories // G` per step) with the rule reward only,
    at the recipe's settings: G, max new tokens, sampling, lr, AdamW (betas 0.9/0.999 as workers/deepspeed.py,
    constant lr: the policy worker has no scheduler), weight decay, grad clip, PPO clip, KL coefficient, token-mean
    loss (TRL's "dapo"), one optimizer step per batch in micro-batches of policy.micro_batch_size."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    micro = min(cfg.policy.micro_batch_size, trajectories)
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=micro, gradient_accumulation_steps=trajectories // micro,
        num_generations=cfg.rollout.group_size, max_completion_length=max_new_tokens or cfg.rollout.max_new_tokens,
        num_iterations=1, beta=cfg.policy.kl_coef, loss_type="dapo", learning_rate=cfg.policy.lr,
        lr_scheduler_type="constant", optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999,
        weight_decay=cfg.policy.weight_decay, max_grad_norm=cfg.policy.grad_clip,
        temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=0,
        epsilon=cfg.policy.clip_low, epsilon_high=cfg.policy.clip_high, max_steps=max_steps, logging_steps=10**6,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=seed, shuffle_dataset=False,
        dataloader_num_workers=0, use_vllm=False, log_completions=False)
    dataset = Dataset.from_dict({"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]})

    def correctness(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [float(task.verify(c, a)) for c, a in zip(completions, answer)]

    return GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_path), reward_funcs=[correctness],
                       args=args, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(policy_path),
                       callbacks=callbacks)


def run(trainer: BenchTrainer, policy_path: str, quick: bool, trajectories: int, max_new_tokens: int,
        target: tuple[str, float] = (TRL_TARGET, 1.0), reps: int | None = None,
        label: str = "") -> tuple[dict[str, Any], list[Table]]:
    """`target`: (Targets row, least ratio tdrm-rl PRM online / TRL trajectories/s); `reps`: timed steps per
    system (default 1 quick, 3 full); `label`: what the tables' titles name as the model (the tiny one if empty)."""
    target_name, target_ratio = target
    try:
        import trl
        from transformers import TrainerCallback
    except ImportError as e:
        msg = f"TRL comparison skipped: {e} (run through `make bench`, which installs trl in .venv-bench)"
        print(msg)
        return {"skipped": msg, "targets": [{"target": target_name, "measured": "not run (trl missing)",
                                             "met": None}]}, []

    group = trainer.cfg.rollout.group_size
    prompts_per_step = trajectories // group
    reps = reps or (1 if quick else 3)
    task = trainer.task
    import random

    problems = task.sample_train(prompts_per_step * (reps + 2), random.Random(1))

    trl_times: list[float] = []
    trl_lengths: list[float] = []
    steps: dict[str, list[dict[str, float]]] = {"tdrm_prm_online": [], "tdrm_prm_off": []}  # timed steps' metrics
    counter = [2000]
    trainer.set_shape(trajectories, max_new_tokens)

    class Alternate(TrainerCallback):
        begin = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            elapsed = time.perf_counter() - self.begin
            first = state.global_step <= 1  # warm-up step of each side, not timed
            if not first:
                trl_times.append(elapsed)
                trl_lengths.append(grpo._metrics["train"]["completions/mean_length"][-1])
            for name, off in (("tdrm_prm_online", False), ("tdrm_prm_off", True)):
                prm_off(trainer, off)
                counter[0] += 1
                metrics = trainer.step(counter[0])
                print(f"TRL comparison: TRL step {elapsed:.2f} s; tdrm-rl {name} {metrics['timing_s/step']:.2f} s ("
                      + ", ".join(f"{k.split('/')[1]} {metrics.get(k, 0.0):.2f}" for _, k in STAGES) + ")", flush=True)
                if not first:
                    steps[name].append(metrics)
            prm_off(trainer, False)

    grpo = grpo_trainer(trainer.cfg, policy_path, task, problems, trajectories, reps + 1, [Alternate()],
                        max_new_tokens=max_new_tokens)
    grpo.train()

    times = {"trl": trl_times, **{k: [m["timing_s/step"] for m in v] for k, v in steps.items()}}
    med = {k: median(v) for k, v in times.items()}
    tps = {k: trajectories / v for k, v in med.items()}
    # Response length sets the cost of every stage: each side's policy drifts on its own during the run.
    lengths = {"trl": median(trl_lengths)}
    lengths.update({k: median([m["response/length_mean"] for m in v]) for k, v in steps.items()})
    stages = {k: {key: median([m.get(key, 0.0) for m in v]) for _, key in STAGES} for k, v in steps.items()}
    model = f"{label}, " if label else ""
    table = Table(f"TRL GRPOTrainer {trl.__version__} vs tdrm-rl ({model}{prompts_per_step} prompts x G={group}, "
                  f"{max_new_tokens} new tokens, {reps} timed steps each, alternating)",
                  ["system", "median step s", "steps/s", "trajectories/s", "ratio vs TRL", "mean response tokens",
                   "generated tokens/s"])
    labels = {"trl": "TRL GRPOTrainer", "tdrm_prm_online": "tdrm-rl, PRM online",
              "tdrm_prm_off": "tdrm-rl, PRM off (frozen, w_prm=0)"}
    for key, name in labels.items():
        table.add(name, med[key], 1 / med[key], tps[key], tps[key] / tps["trl"], lengths[key],
                  tps[key] * lengths[key])
    where = Table(f"Where a tdrm-rl step of the TRL comparison goes ({model}median s)",
                  ["stage", labels["tdrm_prm_online"], labels["tdrm_prm_off"]])
    for stage, key in STAGES:
        where.add(stage, stages["tdrm_prm_online"][key], stages["tdrm_prm_off"][key])
    on, off = stages["tdrm_prm_online"], stages["tdrm_prm_off"]
    # What the PRM adds to a step's wall time: its values pass plus the update stage's growth over PRM-off steps.
    prm_wall = on["timing_s/prm_values_and_logprobs"] + max(0.0, on["timing_s/update"] - off["timing_s/update"])
    ratio = tps["tdrm_prm_online"] / tps["trl"]
    row = {"target": target_name, "measured": f"{ratio:.2f}x", "met": ratio >= target_ratio}
    return {"trl_version": trl.__version__, "trajectories": trajectories, "max_new_tokens": max_new_tokens,
            "step_times": times, "median_step_s": med, "trajectories_per_s": tps,
            "ratio_prm_online_vs_trl": ratio, "ratio_prm_off_vs_trl": tps["tdrm_prm_off"] / tps["trl"],
            "mean_response_tokens": lengths, "tdrm_stage_s": stages,
            "prm_critical_path_share": prm_wall / med["tdrm_prm_online"], "targets": [row]}, [table, where]
