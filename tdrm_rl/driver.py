"""The RL driver. Each step is a sequence of named, timed stages:

    rollout -> verify -> PRM values (+ old/ref logprobs) -> blend -> advantages
    -> policy update + PRM TD update (concurrently: they touch different models)
    -> weight sync -> metrics -> evaluation / checkpoint
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from contextlib import contextmanager
from typing import Any

import ray
import torch
from tqdm import tqdm

from tdrm_rl.algos import DynamicSampler, advantage_metrics, compute_advantages
from tdrm_rl.batch import Batch
from tdrm_rl.blend import aggregate_prm, blend_rewards
from tdrm_rl.checkpoint import (capture_rng, latest_checkpoint, load_checkpoint, model_fingerprint, resolve_resume,
                                restore_rng, write_checkpoint)
from tdrm_rl.collate import TokenTexts, collate
from tdrm_rl.config import ConfigError, RunConfig, to_yaml
from tdrm_rl.generation import Generated
from tdrm_rl.models import resolve_model_path
from tdrm_rl.health import response_counts
from tdrm_rl.prm_metrics import calibration, ranking_accuracy
from tdrm_rl.sampler import TrainSampler
from tdrm_rl.stop import RunStopped, StopSignals
from tdrm_rl.prompts import PRMView, PromptedTask, same_tokenization
from tdrm_rl.tasks import get_task
from tdrm_rl.td import prm_td_loss, terminal_mask
from tdrm_rl.tokenizer import step_delimiter_problem
from tdrm_rl.tracking import MetricsLogger, format_table, plot_curves, read_metrics
from workers.group import RoleError, WorkerDied, WorkerGroup, start_groups
from workers.policy import PolicyWorker
from workers.prm import PRMWorker, td_targets
from workers.placement import Placement
from workers.rollout import rollout_worker_class
from workers.weight_sync import WeightSync


class StageTimer:
    """`with timer("rollout"): ...` records seconds under timing_s/rollout."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[f"timing_s/{name}"] = time.perf_counter() - start


def cpu_cores() -> int:
    """Cores this node lends the run: Ray's CPU count, at most the machine's (read before actors reserve any)."""
    cores = int(ray.available_resources().get("CPU", os.cpu_count() or 1)) or 1
    return max(1, min(cores, os.cpu_count() or 1))


def thread_split(cfg: RunConfig, cores: int) -> tuple[int, int]:
    """Rollout runs alone, so it may use every core; policy and PRM train side by side, so they split them."""
    if cfg.trainer.torch_threads > 0:
        return cfg.trainer.torch_threads, cfg.trainer.torch_threads
    if cfg.trainer.async_rollout:  # rollout runs beside the trainers: it gets a trainer's share too
        return max(1, cores // 2), max(1, cores // 2)
    return cores, max(1, cores // 2)


def stage_threads(cfg: RunConfig, cores: int, trainers_at_once: int) -> int:
    """Torch threads for each trainer in a stage where `trainers_at_once` of them compute (0: keep the start value).

    On CPU a sync step leaves the rollout idle while the trainers work, so the trainers of a stage share
    every core: the PRM values pass, or a policy update with the PRM frozen, runs alone on all of them.
    Not under async rollout (generation runs beside), an explicit `trainer.torch_threads`, or on GPUs.
    """
    if cfg.trainer.torch_threads > 0 or cfg.trainer.async_rollout or cfg.cluster.num_gpus_per_worker > 0:
        return 0
    return max(1, cores // max(1, trainers_at_once))


def check_inputs(cfg: RunConfig, policy_path: str) -> tuple[Any, Any]:
    """The task (every data row read and checked) and the policy tokenizer (it must carry the step delimiter).

    Cheap and worker-free: the CLI calls it before starting Ray, so bad input never starts a cluster.
    """
    task = get_task(cfg.data)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(policy_path, "policy"),
                                              trust_remote_code=cfg.model.trust_remote_code)
    problem = step_delimiter_problem(tokenizer, cfg.data.step_delimiter)
    if problem:  # without the delimiter there are no steps for the PRM to score
        raise ConfigError(f"key 'data.step_delimiter' = {cfg.data.step_delimiter!r} does not fit the tokenizer "
                          f"of {policy_path}: {problem}")
    # Real-problem tasks hand out bare questions: render them with the policy's chat template.
    return PromptedTask(task, tokenizer, cfg.data.system_prompt), tokenizer


class RLTrainer:
    def __init__(self, cfg: RunConfig, policy_path: str) -> None:
        self.cfg = cfg
        self.task, self.tokenizer = check_inputs(cfg, policy_path)
        self.token_texts = TokenTexts(self.tokenizer)
        self.sampler = TrainSampler(self.task, cfg.data.train_size, cfg.trainer.seed)
        self.rng = self.sampler.rng
        # Restarts and NaN-guard counts (checkpointed); the reference model is the initial policy.
        self.counters = {"restarts": 0, "nonfinite_in_a_row": 0, "nonfinite_total": 0}
        self.reference_identity = model_fingerprint(policy_path)
        self.eval_set = self.task.eval_problems(cfg.data.eval_size)
        self.out = cfg.trainer.output_dir
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, "config.yaml"), "w") as f:
            f.write(to_yaml(cfg))
        self.logger = MetricsLogger(self.out, cfg.trainer.tensorboard)

        try:
            self.start_workers(policy_path)
        except BaseException:
            self.shutdown()  # a failed start leaves no actor behind (on a shared cluster nothing else frees them)
            raise
        self.weights_version = 0
        self.pending: tuple | None = None  # async rollout: (problems, refs, weights_version) of the next step

    def start_workers(self, policy_path: str) -> None:
        """Create and start the rollout, policy and PRM actor groups, and the weight sync between them."""
        cfg = self.cfg
        cc = cfg.cluster
        self.cores = cpu_cores()
        rollout_threads, trainer_threads = thread_split(cfg, self.cores)
        self.placement = Placement(cfg)  # placement groups for every role's ranks (see workers/placement.py)
        # Roles start in parallel, except on shared GPUs, where vLLM's memory profiling must not see the
        # trainers allocate at the same time: there each group comes up before the next one starts.
        one_by_one = cc.colocate
        self.rollout = WorkerGroup(rollout_worker_class(cfg.rollout.backend), "rollout", cfg,
                                   world_size=cfg.rollout.num_workers, num_cpus=cc.rollout_cpus,
                                   num_gpus=cc.num_gpus_per_worker, placement=self.placement,
                                   model_path=policy_path, num_threads=rollout_threads, start=one_by_one)
        self.policy = WorkerGroup(PolicyWorker, "policy", cfg, world_size=cfg.policy.world_size,
                                  num_cpus=cc.policy_cpus, num_gpus=cc.num_gpus_per_worker, placement=self.placement,
                                  distributed=True, model_path=policy_path, num_threads=trainer_threads,
                                  start=one_by_one)
        prm_path = cfg.model.prm_path or policy_path
        # A PRM with its own tokenizer or template gets its own token ids (None: it reads the policy batch).
        self.prm_view = self.make_prm_view(prm_path) if cfg.model.prm_path else None
        self.prm = WorkerGroup(PRMWorker, "prm", cfg, world_size=cfg.prm.world_size, num_cpus=cc.prm_cpus,
                               num_gpus=cc.num_gpus_per_worker, placement=self.placement,
                               distributed=True, model_path=prm_path, init_from_policy=cfg.model.prm_path is None,
                               num_threads=trainer_threads, start=one_by_one)
        if not one_by_one:
            start_groups(self.groups())
        self.weight_sync = WeightSync(cfg, self.policy, self.rollout)  # inprocess | reload | nccl | ipc

    def groups(self) -> list[WorkerGroup]:
        return [self.rollout, self.policy, self.prm]

    def push_weights(self) -> None:
        """Send the policy's current weights to every rollout worker under the current version."""
        state_refs = self.policy.submit("export_state_dict")
        self.rollout.get([a.update_weights.remote(state_refs[0], self.weights_version) for a in self.rollout.actors],
                         stage="weight_sync")

    def shutdown(self) -> None:
        """Kill every actor this trainer started and free its placement groups (on a shared cluster nothing else
        would). Safe after a start that failed half-way."""
        for group in (getattr(self, n, None) for n in ("rollout", "policy", "prm")):
            if group is not None:
                group.kill()
        if getattr(self, "placement", None) is not None:
            self.placement.remove()  # the groups of roles that never started

    def make_prm_view(self, prm_path: str) -> PRMView | None:
        from transformers import AutoTokenizer

        prm_tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(prm_path, "PRM"))
        if same_tokenization(self.tokenizer, prm_tokenizer):
            return None
        if prm_tokenizer.pad_token_id is None:
            prm_tokenizer.pad_token = prm_tokenizer.eos_token
        return PRMView(prm_tokenizer, self.cfg.data.system_prompt, self.cfg.data.step_delimiter)

    # ----- stages -------------------------------------------------------------------------------
    def generate(self, prompts: list[str], n: int, sampling: dict[str, Any]) -> Generated:
        return self.gather_generated(self.submit_generate(prompts, n, sampling))

    def submit_generate(self, prompts: list[str], n: int, sampling: dict[str, Any]) -> list[ray.ObjectRef]:
        """Split prompts into contiguous shards, one per rollout worker."""
        workers = self.rollout.actors
        size = -(-len(prompts) // len(workers))
        shards = [prompts[i:i + size] for i in range(0, len(prompts), size)]
        return [a.generate.remote(s, n, sampling) for a, s in zip(workers, shards)]

    def gather_generated(self, refs: list[ray.ObjectRef]) -> Generated:
        """The shards' results concatenated in order."""
        parts = self.rollout.get(refs, stage="generate")
        return Generated(*(sum((getattr(p, f) for p in parts), []) for f in
                           ("prompt_ids", "response_ids", "response_text", "response_logprobs")))

    def verify(self, texts: list[str], answers: list[str]) -> torch.Tensor:
        return torch.tensor([self.task.verify(t, a) for t, a in zip(texts, answers)], dtype=torch.float32)

    def make_batch(self, gen: Generated, problems: list, n: int) -> Batch:
        group_ids = [i for i in range(len(problems)) for _ in range(n)]
        meta = {"answer": [problems[g].answer for g in group_ids], "response_text": gen.response_text,
                "prompt": [problems[g].prompt for g in group_ids]}
        return collate(gen.prompt_ids, gen.response_ids, group_ids, self.token_texts,
                       pad_id=self.tokenizer.pad_token_id, delimiter=self.cfg.data.step_delimiter,
                       rollout_logprobs=gen.response_logprobs, meta=meta)

    def blend(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rc = self.cfg.reward
        prm_score = aggregate_prm(batch.step_logits, batch.step_mask, rc.prm_aggregate, rc.prm_use_logit)
        rewards = blend_rewards(batch.outcome, prm_score, rc.w_rule, rc.w_prm, batch.group_ids, rc.normalize)
        return rewards, prm_score

    def sync_weights(self) -> None:
        """Policy weights into every rollout worker (rollout is locked meanwhile; bounded by rollout.sync_timeout_s)."""
        self.weights_version += 1
        self.weight_sync.sync(self.weights_version)

    def submit_rollout(self) -> tuple:
        """Sample the prompts of a step and start its rollout on the weights the workers hold now."""
        problems = self.sampler.next(self.cfg.rollout.prompts_per_step)
        refs = self.submit_generate([p.prompt for p in problems], self.cfg.rollout.group_size, {})
        return problems, refs, self.weights_version

    def collect(self, step: int) -> tuple[list, Generated, int]:
        """This step's rollout. Async: the one submitted during the previous step (one step stale), and
        the next step's is submitted now, so it runs while the policy and PRM train on this one."""
        problems, refs, version = self.pending or self.submit_rollout()
        self.pending = None
        gen = self.gather_generated(refs)
        if self.cfg.trainer.async_rollout and step < self.cfg.trainer.total_steps:
            self.pending = self.submit_rollout()
        return problems, gen, self.weights_version - version

    # ----- one RL step --------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, Any]:
        cfg, timer = self.cfg, StageTimer()
        rc = cfg.rollout
        with timer("step"):
            if cfg.algorithm.dynamic_sampling:
                staleness = 0
                with timer("rollout"):
                    gen, problems, outcome, sampling = self.dynamic_rollout(self.sampler.next(rc.prompts_per_step))
                batch = self.make_batch(gen, problems, rc.group_size)
                batch.outcome = outcome
            else:
                sampling = {}
                with timer("rollout"):
                    problems, gen, staleness = self.collect(step)
                with timer("verify"):
                    batch = self.make_batch(gen, problems, rc.group_size)
                    batch.outcome = self.verify(gen.response_text, batch.meta["answer"])
            with timer("prm_values_and_logprobs"):
                prm_batch = self.prm_view(batch, problems) if self.prm_view else batch
                policy_calls = {}  # batch field <- policy method, computed beside the PRM values
                if cfg.trainer.async_rollout:  # off-policy by a step: ratios against the behaviour policy
                    batch.old_logprobs = batch.rollout_logprobs
                elif cfg.policy.mini_batches > 1:
                    policy_calls["old_logprobs"] = "logprobs"
                if cfg.policy.kl_coef > 0:
                    policy_calls["ref_logprobs"] = "ref_logprobs"
                self.share_cores(self.prm, *([self.policy] if policy_calls else []))
                refs = {"step_logits": self.prm.submit("values", prm_batch)[0]}
                refs.update({field: self.policy.submit(method, batch)[0] for field, method in policy_calls.items()})
                for name, ref in refs.items():
                    setattr(batch, name, self.prm.get(ref, stage=name) if name == "step_logits"
                            else self.policy.get(ref, stage=name))
                prm_batch.step_logits = batch.step_logits
            prm_metrics = None
            if cfg.prm.update == "online_before":  # the critic learns from this batch before it judges it
                with timer("prm_update_before"):
                    self.share_cores(self.prm)
                    prm_metrics = self.prm.get(self.prm.submit("td_update", prm_batch)[0], stage="prm_td_update")
                    batch.step_logits = self.prm.get(self.prm.submit("values", prm_batch)[0], stage="step_logits")
                    prm_batch.step_logits = batch.step_logits
            with timer("advantages"):
                batch.rewards, prm_score = self.blend(batch)
                estimate, token_rewards = compute_advantages(batch, cfg, batch.rewards)
                batch.advantages = estimate.advantages
            with timer("update"):
                prm_updates = self.prm_updates_after(step)
                self.share_cores(self.policy, *([self.prm] if prm_updates else []))
                policy_ref = self.policy.submit("update", batch)
                prm_ref = self.prm.submit("td_update", prm_batch) if prm_updates else None
                metrics = self.policy.get(policy_ref, stage="policy_update")[0]
                if prm_ref is not None:
                    metrics.update(self.prm.get(prm_ref, stage="prm_td_update")[0])
                elif prm_metrics is not None:
                    metrics.update(prm_metrics)
                else:
                    metrics.update(self.frozen_td_metrics(batch))
                metrics["prm/updated"] = float(prm_ref is not None or prm_metrics is not None)
            if self.pending is not None:  # async: the next rollout holds the rollout workers until it ends
                with timer("rollout_wait"):
                    ray.wait(self.pending[1], num_returns=len(self.pending[1]), timeout=self.rollout.timeout)
            with timer("weight_sync"):
                self.sync_weights()
        metrics.update(timer.seconds)
        metrics["rollout/staleness"] = staleness
        # Async hides the rollout inside the step: throughput is then per step, not per rollout second.
        busy = timer.seconds["timing_s/step" if cfg.trainer.async_rollout else "timing_s/rollout"]
        metrics.update(self.batch_metrics(batch, prm_score, busy))
        metrics.update(advantage_metrics(estimate, token_rewards, batch.response_mask))
        metrics.update(sampling)
        return metrics

    def share_cores(self, *groups: WorkerGroup) -> None:
        """Size the torch threads of these groups' actors for the stage they are about to compute in together."""
        threads = stage_threads(self.cfg, self.cores, sum(len(g.actors) for g in groups))
        if threads:
            for group in groups:
                group.submit("use_threads", threads)  # runs before the stage's calls: actors keep call order

    def prm_updates_after(self, step: int) -> bool:
        """Whether the PRM's TD update (the critic update) runs alongside this step's policy update."""
        pc = self.cfg.prm
        return pc.update == "online" or (pc.update == "every_k" and step % pc.update_every == 0)

    def dynamic_rollout(self, problems: list) -> tuple[Generated, list, torch.Tensor, dict[str, float]]:
        """DAPO dynamic sampling: roll out, keep groups whose verifiable rewards differ, refill from
        fresh prompts for at most `algorithm.max_extra_rounds` extra rounds (see `DynamicSampler`)."""
        rc, n = self.cfg.rollout, self.cfg.rollout.group_size
        sampler = DynamicSampler(rc.prompts_per_step, self.cfg.algorithm.max_extra_rounds)
        while sampler.needs_more():
            gen = self.generate([p.prompt for p in problems], n, {})
            answers = [p.answer for p in problems for _ in range(n)]
            outcome = self.verify(gen.response_text, answers)
            fields = [f.name for f in dataclasses.fields(Generated)]
            groups = [(p, Generated(*(getattr(gen, f)[k * n:(k + 1) * n] for f in fields)), outcome[k * n:(k + 1) * n])
                      for k, p in enumerate(problems)]
            sampler.add_round(groups, outcome.view(len(problems), n))
            if sampler.needs_more():
                problems = self.sampler.next(sampler.missing())
        chosen = sampler.result()
        gen = Generated()
        for group in chosen:
            gen.extend(group[1])
        return gen, [g[0] for g in chosen], torch.cat([g[2] for g in chosen]), sampler.stats()

    def frozen_td_metrics(self, batch: Batch) -> dict[str, float]:
        targets = td_targets(self.cfg.prm, batch.step_logits, batch)
        loss = prm_td_loss(batch.step_logits, targets, batch.step_mask, self.cfg.prm.terminal_weight)
        return {"prm/td_loss": float(loss)}

    def batch_metrics(self, batch: Batch, prm_score: torch.Tensor, rollout_s: float) -> dict[str, float]:
        values = torch.sigmoid(batch.step_logits)
        final = terminal_mask(batch.step_mask)
        has_steps = batch.step_mask.sum(1) > 0
        final_values = (values * final).sum(1)[has_steps]
        cal = calibration(final_values, batch.outcome[has_steps])
        tokens = batch.num_response_tokens
        return {
            "reward/rule_mean": float(batch.outcome.mean()),
            "reward/prm_score_mean": float(prm_score.mean()),
            "reward/blended_mean": float(batch.rewards.mean()),
            "prm/ranking_accuracy": ranking_accuracy(prm_score, batch.outcome, batch.group_ids),
            "prm/final_value_ece": cal["ece"],
            "prm/final_value_brier": cal["brier"],
            "response/length_mean": tokens / len(batch),
            "response/steps_mean": float(batch.step_mask.sum(1).mean()),
            "throughput/tokens_per_s": tokens / max(rollout_s, 1e-9),
            "throughput/trajectories_per_s": len(batch) / max(rollout_s, 1e-9),
            **response_counts(batch.meta["response_text"], self.cfg.data.step_delimiter),
            **self.step_label_metrics(batch, values),
        }

    def step_label_metrics(self, batch: Batch, values: torch.Tensor) -> dict[str, float]:
        """With exact step labels (arith): the PRM's step AUC and first-error F1 on this step's rollouts."""
        from tdrm_rl.prm_metrics import first_error_metrics, step_auc
        from tdrm_rl.rollout_data import step_label_table
        from tdrm_rl.steps import split_steps

        if "prompt" not in batch.meta:
            return {}
        delim = self.cfg.data.step_delimiter
        table = step_label_table(self.task, batch.meta["prompt"], [split_steps(t, delim) for t in
                                                                    batch.meta["response_text"]],
                                 batch.meta["answer"], batch.step_mask)
        if table is None:
            return {}
        labels, ok = table
        mask = batch.step_mask * ok[:, None].to(batch.step_mask.dtype)
        discount = self.cfg.prm.gamma
        fe = first_error_metrics(values.double(), labels, mask, discount=discount)
        return {"prm/step_auc": step_auc(values, labels, mask), "prm/first_error_f1": fe["first_error_f1"]}

    # ----- evaluation and checkpoints -----------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        prompts = [p.prompt for p in self.eval_set]
        answers = [p.answer for p in self.eval_set]
        greedy = self.generate(prompts, 1, {"temperature": 0.0})
        out = {"eval/greedy_accuracy": float(self.verify(greedy.response_text, answers).mean())}
        if self.cfg.trainer.eval_sampled:
            sampled = self.generate(prompts, 1, {"temperature": self.cfg.rollout.eval_temperature})
            out["eval/sampled_accuracy"] = float(self.verify(sampled.response_text, answers).mean())
        return out

    def save_checkpoint(self, step: int) -> str:
        return write_checkpoint(self, step)

    def last_checkpoint(self, step: int, saved_at: int) -> str | None:
        """The checkpoint a run ends on at `step`: written unless this step has one; None with save_every=-1."""
        if self.cfg.trainer.save_every < 0:
            return None
        return latest_checkpoint(self.out) if saved_at == step else self.save_checkpoint(step)

    # ----- faults ---------------------------------------------------------------------------------
    def recover(self, died: WorkerDied) -> int | None:
        """Restart the dead role. Rollout: reload the last synced policy weights, retry the step (returns None).
        Policy / PRM: their state is lost, so the whole run goes back to the newest checkpoint (returns its step).
        """
        self.counters["restarts"] += 1
        limit = self.cfg.cluster.max_restarts
        if self.counters["restarts"] > limit:
            raise RoleError(f"{died} (restarts used up: cluster.max_restarts={limit})")
        group = {g.role: g for g in self.groups()}[died.role]
        logging.getLogger("tdrm_rl").warning("%s; restarting %s (%d of %d)", died, died.role,
                                             self.counters["restarts"], limit)
        group.restart()
        if died.role == "rollout":
            self.push_weights()
            return None
        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            raise RoleError(f"{died}; no checkpoint to restore {died.role} from (set trainer.save_every)")
        return self.resume_from(ckpt)

    def resume_from(self, ckpt: str) -> int:
        """Load a checkpoint into the running workers; drop metrics rows logged after it."""
        try:
            step = load_checkpoint(self, ckpt)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"cannot resume from {ckpt}: {e}") from None
        self.logged = self.logger.truncate(step)
        return step

    def run_step(self, step: int) -> tuple[dict[str, Any] | None, int | None]:
        """One step (and its evaluation), retried after a worker death. Returns (metrics, None), or
        (None, step to continue after) when recovery rewound the run to a checkpoint."""
        tc = self.cfg.trainer
        snapshot = self.sampler.state_dict(), capture_rng()
        while True:
            try:
                metrics = self.step(step)
                if step % tc.eval_every == 0 or step == tc.total_steps:
                    t0 = time.perf_counter()
                    metrics.update(self.evaluate())
                    metrics["timing_s/eval"] = time.perf_counter() - t0
                return metrics, None
            except WorkerDied as died:
                rewound = self.recover(died)
                if rewound is not None:
                    return None, rewound
                self.sampler.load_state_dict(snapshot[0])  # the retried step sees the same problems
                restore_rng(snapshot[1])

    def nan_guard(self, step: int, metrics: dict[str, Any]) -> bool:
        """Count steps whose update the workers skipped (non-finite loss or gradient); stop after K in a row."""
        skipped = metrics.get("policy/skipped_updates", 0) + metrics.get("prm/skipped_updates", 0) > 0
        self.counters["nonfinite_in_a_row"] = self.counters["nonfinite_in_a_row"] + 1 if skipped else 0
        self.counters["nonfinite_total"] += int(skipped)
        metrics["trainer/nonfinite_skips"] = self.counters["nonfinite_total"]
        limit = self.cfg.trainer.max_nonfinite_updates
        if self.counters["nonfinite_in_a_row"] >= limit:
            self.logger.log(step, metrics)
            raise RunStopped(f"stopped at step {step}: {limit} updates in a row had a non-finite loss or gradient "
                             f"(trainer.max_nonfinite_updates={limit}); last good checkpoint: "
                             f"{latest_checkpoint(self.out) or 'none'}")
        return skipped

    # ----- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        tc = self.cfg.trainer
        start = time.time()
        try:
            ckpt = resolve_resume(tc.resume, self.out)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        step = self.resume_from(ckpt) if ckpt else 0
        if step == 0:
            first = self.evaluate()
            self.logger.log(0, first)
            self.logged = [{"step": 0, **first}]
        saved_at = step if ckpt else -1
        bar = tqdm(total=tc.total_steps, initial=step, desc="RL", disable=not tc.progress, dynamic_ncols=True)
        with StopSignals() as stop:
            while step < tc.total_steps:
                metrics, rewound = self.run_step(step + 1)
                if rewound is not None:
                    step = saved_at = rewound
                    bar.n = step
                    continue
                step += 1
                metrics["data/epoch"] = self.sampler.epoch
                metrics["workers/restarts"] = self.counters["restarts"]
                skipped = self.nan_guard(step, metrics)
                self.logger.log(step, metrics)
                self.logged.append({"step": step, **metrics})
                if tc.save_every > 0 and step % tc.save_every == 0 and step != tc.total_steps and not skipped:
                    self.save_checkpoint(step)
                    saved_at = step
                bar.update(1)
                bar.set_postfix(acc=f"{metrics['reward/rule_mean']:.2f}", td=f"{metrics.get('prm/td_loss', 0):.3f}",
                                s=f"{metrics['timing_s/step']:.1f}")
                if stop.requested and step < tc.total_steps:
                    path = self.last_checkpoint(step, saved_at)
                    self.logger.close()
                    then = (f"resume with trainer.resume=auto (checkpoint: {path})" if path
                            else "no checkpoint written (trainer.save_every=-1)")
                    raise RunStopped(f"stopped by {stop.name} after step {step}; {then}",
                                     exit_code=128 + stop.requested)
        bar.close()
        ckpt = self.last_checkpoint(tc.total_steps, saved_at)
        self.logger.close()
        evals = [{k: v for k, v in r.items() if k.startswith("eval/")} for r in self.logged
                 if r.get("eval/greedy_accuracy") is not None]
        summary = self.summarize(evals, ckpt, time.time() - start)
        return summary

    def summarize(self, evals: list[dict[str, float]], ckpt: str | None, seconds: float) -> dict[str, Any]:
        last = evals[-2:] if len(evals) > 2 else evals[-1:]
        summary = {
            "warm_start_greedy_accuracy": evals[0]["eval/greedy_accuracy"],
            "final_greedy_accuracy": sum(e["eval/greedy_accuracy"] for e in last) / len(last),
            "warm_start_sampled_accuracy": evals[0].get("eval/sampled_accuracy"),
            "final_sampled_accuracy": (sum(e["eval/sampled_accuracy"] for e in last) / len(last)
                                       if "eval/sampled_accuracy" in evals[0] else None),
            "eval_problems": len(self.eval_set),
            "rl_seconds": seconds,
            "checkpoint": ckpt,
        }
        rows = read_metrics(self.logger.path)
        summary["plot"] = plot_curves(rows, os.path.join(self.out, "curves.png"))
        with open(os.path.join(self.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        table = format_table([
            ("held-out problems", str(len(self.eval_set))),
            ("greedy accuracy, warm start", fmt(summary["warm_start_greedy_accuracy"])),
            ("greedy accuracy, after RL (mean of last 2 evals)", fmt(summary["final_greedy_accuracy"])),
            ("sampled accuracy T=1, warm start", fmt(summary["warm_start_sampled_accuracy"])),
            ("sampled accuracy T=1, after RL (mean of last 2 evals)", fmt(summary["final_sampled_accuracy"])),
            ("RL wall time (s)", f"{seconds:.0f}"),
        ], title="tdrm-rl summary")
        saved = ckpt or "none (trainer.save_every=-1)"
        print("\n" + table + f"\n\nmetrics: {self.logger.path}\nplot:    {summary['plot']}\ncheckpoint: {saved}\n")
        return summary
