"""One RL step as named, timed stages (StepStages.step). In order:

    rollout                  sample prompts; the rollout workers generate G responses each
    verify                   collate the batch; the task's verifier scores each final answer
    prm_values_and_logprobs  PRM values V(s_t) at every step end (one forward per trajectory), and the
                             policy's old / reference logprobs beside them when the recipe needs them; with
                             prm.reuse_values_forward the PRM keeps this pass for its TD update (no second forward)
    prm_update_before        prm.update=online_before only: a TD update, then the PRM re-scores the batch
    advantages               blend rule and PRM rewards, then the advantage estimator
    update                   policy update, and the PRM's TD update beside it (they touch different models), or
                             on CPU, once that update measured short, alone on every core just before it
    rollout_wait             trainer.async_rollout only: the next step's rollout finishes
    weight_sync              the policy's weights into every rollout worker

Each stage is timed as timing_s/<stage> (tdrm_rl.rl.metrics.STAGES); per run also eval.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ray
import torch

from tdrm_rl.algos import DynamicSampler, compute_advantages
from tdrm_rl.algos.blend import aggregate_prm, blend_rewards
from tdrm_rl.algos.td import prm_td_loss, td_targets
from tdrm_rl.config import RunConfig
from tdrm_rl.data.batch import Batch
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.data.sampler import TrainSampler
from tdrm_rl.models.generation import Generated
from tdrm_rl.rl.cores import CoreShare
from tdrm_rl.rl.metrics import StageTimer, step_metrics
from tdrm_rl.rl.schedule import PRMSchedule
from tdrm_rl.tasks.bounded import timeouts_so_far
from tdrm_rl.tasks.answers import follows_format
from tdrm_rl.tasks.prompts import PRMView
from tdrm_rl.workers.group import WorkerGroup
from tdrm_rl.workers.weight_sync import WeightSync


class PendingRollout(NamedTuple):
    """Async rollout: the next step's problems, its generate refs, and the weights version they sample from."""

    problems: list
    refs: list
    version: int


class StepStages:
    """The stages of one step over the worker groups; RLTrainer (rl/trainer.py) builds the groups and runs the
    loop around `step`."""

    cfg: RunConfig
    task: Any
    tokenizer: Any
    token_texts: TokenTexts
    sampler: TrainSampler
    schedule: PRMSchedule
    cores: CoreShare
    rollout: WorkerGroup
    policy: WorkerGroup
    prm: WorkerGroup
    prm_view: PRMView | None
    weight_sync: WeightSync
    weights_version: int
    pending: PendingRollout | None
    verify_timeouts: int = 0  # answer checks cut off at their deadline in this step

    # ----- building blocks ------------------------------------------------------------------------
    def generate(self, prompts: list[str], n: int, sampling: dict[str, Any]) -> Generated:
        return self.gather_generated(self.submit_generate(prompts, n, sampling))

    def submit_generate(self, prompts: list[str], n: int, sampling: dict[str, Any]) -> list[ray.ObjectRef]:
        """Split prompts into contiguous shards, one per rollout worker (ref i: rank i's shard)."""
        workers = self.rollout.actors
        size = -(-len(prompts) // len(workers))
        shards = [prompts[i:i + size] for i in range(0, len(prompts), size)]
        return [a.generate.remote(s, n, sampling) for a, s in zip(workers, shards)]

    def gather_generated(self, refs: list[ray.ObjectRef]) -> Generated:
        """The shards' results concatenated in order."""
        return Generated.concat(self.rollout.get(refs, stage="generate"))

    def verify(self, texts: list[str], answers: list[str]) -> torch.Tensor:
        """Verifiable reward per response. A check past data.verify_timeout_s scores 0 and counts in
        `verify_timeouts` (the step's verify/timeouts)."""
        before = timeouts_so_far()
        outcome = torch.tensor([self.task.verify(t, a) for t, a in zip(texts, answers)], dtype=torch.float32)
        self.verify_timeouts += timeouts_so_far() - before
        return outcome

    def make_batch(self, gen: Generated, problems: list, n: int) -> Batch:
        group_ids = [i for i in range(len(problems)) for _ in range(n)]
        meta = {"answer": [problems[g].answer for g in group_ids], "response_text": gen.response_text,
                "prompt": [problems[g].prompt for g in group_ids]}
        return collate(gen.prompt_ids, gen.response_ids, group_ids, self.token_texts,
                       pad_id=self.tokenizer.pad_token_id, delimiter=self.cfg.data.step_delimiter,
                       rollout_logprobs=gen.response_logprobs, meta=meta)

    def sync_weights(self) -> None:
        """Policy weights into every rollout worker (rollout is locked meanwhile; bounded by rollout.sync_timeout_s)."""
        self.weights_version += 1
        self.weight_sync.sync(self.weights_version)

    def submit_rollout(self) -> PendingRollout:
        """Sample the prompts of a step and start its rollout on the weights the workers hold now."""
        problems = self.sampler.next(self.cfg.rollout.prompts_per_step)
        refs = self.submit_generate([p.prompt for p in problems], self.cfg.rollout.group_size, {})
        return PendingRollout(problems, refs, self.weights_version)

    def dynamic_rollout(self, problems: list) -> tuple[Generated, list, torch.Tensor, dict[str, float]]:
        """DAPO dynamic sampling: roll out, keep groups whose verifiable rewards differ, refill from
        fresh prompts for at most `algorithm.max_extra_rounds` extra rounds (see `DynamicSampler`)."""
        rc, n = self.cfg.rollout, self.cfg.rollout.group_size
        sampler = DynamicSampler(rc.prompts_per_step, self.cfg.algorithm.max_extra_rounds)
        while sampler.needs_more():
            gen = self.generate([p.prompt for p in problems], n, {})
            answers = [p.answer for p in problems for _ in range(n)]
            outcome = self.verify(gen.response_text, answers)
            groups = [(p, gen.rows(k * n, (k + 1) * n), outcome[k * n:(k + 1) * n]) for k, p in enumerate(problems)]
            sampler.add_round(groups, outcome.view(len(problems), n))
            if sampler.needs_more():
                problems = self.sampler.next(sampler.missing())
        chosen = sampler.result()
        return (Generated.concat([g[1] for g in chosen]), [g[0] for g in chosen], torch.cat([g[2] for g in chosen]),
                sampler.stats())

    # ----- one RL step: the stages ------------------------------------------------------------------
    def step(self, step: int) -> dict[str, Any]:
        timer = StageTimer()
        self.verify_timeouts = 0
        with timer("step"):
            with timer("rollout"):
                problems, gen, outcome, staleness, sampling = self.rollout_stage(step)
            with timer("verify"):
                batch = self.verify_stage(gen, problems, outcome)
            with timer("prm_values_and_logprobs"):
                prm_batch = self.score_stage(batch, problems, self.prm_keeps_values(step))
            prm_metrics = None
            if self.schedule.before_advantages:
                with timer("prm_update_before"):
                    prm_metrics = self.prm_update_before_stage(batch, prm_batch)
            with timer("advantages"):
                prm_score, estimate, token_rewards = self.advantage_stage(batch)
            with timer("update"):
                update = self.update_stage(step, batch, prm_batch, prm_metrics)
            if self.pending is not None:
                with timer("rollout_wait"):
                    self.rollout_wait_stage()
            with timer("weight_sync"):
                self.sync_weights()
        update.update(self.worker_timings())
        update["verify/timeouts"] = self.verify_timeouts
        return step_metrics(update, timer.seconds, batch, prm_score, estimate, token_rewards, staleness, sampling,
                            self.cfg, self.task)

    def rollout_stage(self, step: int) -> tuple[list, Generated, torch.Tensor | None, int, dict[str, float]]:
        """This step's responses: (problems, generated, outcome if already verified, staleness, sampling stats).

        Dynamic sampling verifies as it goes. Async: the rollout submitted during the previous step (one step
        stale) is collected, and the next step's is submitted now, to run while the trainers work on this one.
        """
        cfg = self.cfg
        if cfg.algorithm.dynamic_sampling:
            gen, problems, outcome, sampling = self.dynamic_rollout(self.sampler.next(cfg.rollout.prompts_per_step))
            return problems, gen, outcome, 0, sampling
        problems, refs, version = self.pending or self.submit_rollout()
        self.pending = None
        gen = self.gather_generated(refs)
        if cfg.trainer.async_rollout and step < cfg.trainer.total_steps:
            self.pending = self.submit_rollout()
        return problems, gen, None, self.weights_version - version, {}

    def verify_stage(self, gen: Generated, problems: list, outcome: torch.Tensor | None) -> Batch:
        """The step's batch, with the verifiable reward of every response in `batch.outcome`."""
        batch = self.make_batch(gen, problems, self.cfg.rollout.group_size)
        batch.outcome = outcome if outcome is not None else self.verify(gen.response_text, batch.meta["answer"])
        return batch

    def free_rollout_gpu(self) -> None:
        """Colocated with vLLM's sleep mode: the engines sleep before the trainers compute on their GPUs (once a step,
        and before a checkpoint); the next call on an engine wakes it (workers/rollout/vllm_engine.py)."""
        if self.cfg.cluster.colocate and self.cfg.rollout.enable_sleep_mode:
            self.rollout.call("sleep", stage="rollout_sleep")

    def prm_keeps_values(self, step: int) -> bool:
        """prm.reuse_values_forward: whether this step's values pass may keep its graph for the PRM's TD update. Only
        where that update is the PRM's next call on the same weights: beside the policy update (online; every_k on
        its steps) or online_before's update before the advantages (never its re-score, which follows an update)."""
        return self.cfg.prm.reuse_values_forward and (self.schedule.before_advantages
                                                      or self.schedule.with_policy_update(step))

    def score_stage(self, batch: Batch, problems: list, keep_for_update: bool = False) -> Batch:
        """PRM step logits into `batch.step_logits`; old / reference logprobs computed beside them when needed.
        Returns the PRM's view of the batch (the batch itself unless the PRM has its own tokenizer).
        `keep_for_update`: the PRM keeps the pass for its TD update (`prm_keeps_values`)."""
        cfg = self.cfg
        self.free_rollout_gpu()  # the first stage this step that runs the trainers
        prm_batch = self.prm_view(batch, problems) if self.prm_view else batch
        policy_calls = {}  # batch field <- policy method
        if cfg.trainer.async_rollout:  # off-policy by a step: ratios against the behaviour policy
            batch.old_logprobs = batch.rollout_logprobs
        elif cfg.policy.mini_batches > 1:
            policy_calls["old_logprobs"] = "logprobs"
        if cfg.policy.kl_coef > 0:
            policy_calls["ref_logprobs"] = "ref_logprobs"
        self.cores.stage(self.prm, *([self.policy] if policy_calls else []))
        calls = {"step_logits": self.prm.start("values", prm_batch, keep_for_update=keep_for_update,
                                               stage="prm_values")}
        calls.update({field: self.policy.start(method, batch, stage=field) for field, method in policy_calls.items()})
        for field, call in calls.items():
            setattr(batch, field, call.result())
        prm_batch.step_logits = batch.step_logits
        return prm_batch

    def prm_update_before_stage(self, batch: Batch, prm_batch: Batch) -> dict[str, float]:
        """prm.update=online_before: the critic learns from this batch, then scores it again."""
        self.cores.stage(self.prm)
        metrics = self.prm.call("td_update", prm_batch, stage="prm_td_update")
        batch.step_logits = prm_batch.step_logits = self.prm.call("values", prm_batch, stage="prm_values")
        return metrics

    def advantage_stage(self, batch: Batch) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Blend rule and PRM rewards into `batch.rewards`, then the estimator's advantages."""
        rc = self.cfg.reward
        prm_score = aggregate_prm(batch.step_logits, batch.step_mask, rc.prm_aggregate, rc.prm_use_logit)
        rule = self.rule_rewards(batch)
        batch.rewards = blend_rewards(rule, prm_score, rc.w_rule, rc.w_prm, batch.group_ids, rc.normalize)
        estimate, token_rewards = compute_advantages(batch, self.cfg, batch.rewards, rule)
        batch.advantages = estimate.advantages
        return prm_score, estimate, token_rewards

    def rule_rewards(self, batch: Batch) -> torch.Tensor:
        """The policy's rule reward [B]: the 0/1 outcome, plus reward.format_reward for a response in the requested
        answer format (DeepSeek-R1's format reward). batch.outcome, the PRM's TD target, stays 0/1."""
        coef = self.cfg.reward.format_reward
        if coef == 0:
            return batch.outcome
        mode = self.cfg.data.answer_extraction
        follows = torch.tensor([follows_format(t, mode) for t in batch.meta["response_text"]], dtype=torch.float32)
        return batch.outcome + coef * follows

    def update_stage(self, step: int, batch: Batch, prm_batch: Batch,
                     prm_metrics: dict[str, float] | None) -> dict[str, float]:
        """The policy update, and the PRM's TD update when the schedule says so: beside it, or, once measured short
        (CoreShare.prm_update_alone), alone on every core just before it (update/prm_alone = 1)."""
        prm_learns = self.schedule.with_policy_update(step)
        alone = prm_learns and self.cores.prm_update_alone()
        beside = prm_learns and not alone
        if alone:
            self.cores.stage(self.prm)
            prm_metrics = self.prm.call("td_update", prm_batch, stage="prm_td_update")
        self.cores.stage(self.policy, *([self.prm] if beside else []))
        policy = self.policy.start("update", batch, stage="policy_update")
        prm = self.prm.start("td_update", prm_batch, stage="prm_td_update") if beside else None
        metrics = policy.result()
        metrics["update/prm_alone"] = float(alone)
        if prm is not None:
            metrics.update(prm.result())
        elif prm_metrics is not None:
            metrics.update(prm_metrics)
        else:  # a frozen critic: its TD loss on this batch, for the record
            targets = td_targets(self.cfg.prm, batch.step_logits, batch)
            metrics["prm/td_loss"] = float(prm_td_loss(batch.step_logits, targets, batch.step_mask,
                                                       self.cfg.prm.terminal_weight))
        metrics["prm/updated"] = float(prm is not None or prm_metrics is not None)
        self.cores.record_update(metrics)
        return metrics

    def worker_timings(self) -> dict[str, float]:
        """What the workers timed this step and have not reported with a result (rollout generate and weight
        loads; a frozen PRM's values pass), rank 0's: timing_s/<name>, timing_s/rollout_<name> for rollout."""
        out = {}
        for group in (self.rollout, self.policy, self.prm):
            prefix = "rollout_" if group is self.rollout else ""
            out.update({f"timing_s/{prefix}{k}": v for k, v in group.call("pop_timings").items()})
        return out

    def rollout_wait_stage(self) -> None:
        """Async: the next rollout holds the rollout workers until it ends; wait for it before the sync."""
        ray.wait(self.pending.refs, num_returns=len(self.pending.refs), timeout=self.rollout.timeout)
