"""RLTrainer: the online loop. It starts the Ray actor groups (workers/), runs `step` (the stages, in
rl/stages.py) for `trainer.total_steps`, evaluates, checkpoints, recovers from dead workers, and stops cleanly
on a signal or on repeated non-finite updates.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from tqdm import tqdm

from tdrm_rl.config import ConfigError, RunConfig, to_yaml
from tdrm_rl.data.collate import TokenTexts
from tdrm_rl.data.sampler import TrainSampler
from tdrm_rl.evaluation.core import EvalSettings, evaluate_policy
from tdrm_rl.models.load import resolve_model_path
from tdrm_rl.rl.checkpoint import (capture_rng, latest_checkpoint, model_fingerprint, read_state, resolve_resume,
                                   restore_rng, write_checkpoint)
from tdrm_rl.rl.cores import CoreShare, cpu_cores, thread_split
from tdrm_rl.rl.metrics import StageTimer
from tdrm_rl.rl.schedule import PRMSchedule
from tdrm_rl.rl.stages import PendingRollout, StepStages
from tdrm_rl.rl.stop import RunStopped, StopSignals
from tdrm_rl.rl.tracking import MetricsLogger, summarize_run
from tdrm_rl.tasks.prompts import PRMView, load_prompted_task, same_tokenization
from tdrm_rl.workers.group import RoleError, WorkerDied, WorkerGroup, start_groups
from tdrm_rl.workers.placement import Placement
from tdrm_rl.workers.policy import PolicyWorker
from tdrm_rl.workers.prm import PRMWorker
from tdrm_rl.workers.rollout import rollout_worker_class
from tdrm_rl.workers.weight_sync import WeightSync


def check_inputs(cfg: RunConfig, policy_path: str) -> tuple[Any, Any]:
    """The task as the policy sees it (every data row read and checked; real-problem tasks rendered with the chat
    template) and the policy tokenizer, which must carry the step delimiter: the one prompt path every command
    uses (tdrm_rl.tasks.prompts.load_prompted_task). Cheap and worker-free: the CLI calls it before starting Ray,
    so bad input never starts a cluster.
    """
    return load_prompted_task(cfg, policy_path)


class RLTrainer(StepStages):
    """The online loop. `with RLTrainer(cfg, policy_path) as trainer: trainer.fit()` frees every actor after."""

    def __init__(self, cfg: RunConfig, policy_path: str, inputs: tuple[Any, Any] | None = None) -> None:
        self.cfg = cfg
        # `inputs`: what check_inputs returned, when the caller already checked them (the CLI does, before Ray).
        self.task, self.tokenizer = inputs or check_inputs(cfg, policy_path)
        self.token_texts = TokenTexts(self.tokenizer)
        self.sampler = TrainSampler(self.task, cfg.data.train_size, cfg.trainer.seed)
        self.schedule = PRMSchedule(cfg.prm)
        # Restarts and NaN-guard counts (checkpointed); the reference model is the initial policy.
        self.counters = {"restarts": 0, "nonfinite_in_a_row": 0, "nonfinite_total": 0}
        self.reference_identity = model_fingerprint(policy_path)
        self.eval_set = self.task.eval_problems(cfg.data.eval_size)
        self.out = cfg.trainer.output_dir
        self.logger = MetricsLogger(self.out, cfg.trainer.loggers, cfg)  # config.yaml too, and to every logger

        try:
            self.start_workers(policy_path)
        except BaseException:
            self.shutdown()  # a failed start leaves no actor behind (on a shared cluster nothing else frees them)
            raise
        self.weights_version = 0
        self.pending: PendingRollout | None = None

    def __enter__(self) -> "RLTrainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def start_workers(self, policy_path: str) -> None:
        """Create and start the rollout, policy and PRM actor groups, and the weight sync between them."""
        cfg = self.cfg
        cc = cfg.cluster
        self.cores = CoreShare(cfg, cpu_cores())
        rollout_threads, trainer_threads = thread_split(cfg, self.cores.cores)
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
                               lr_scale=cfg.prm.online_lr_scale, num_threads=trainer_threads, start=one_by_one)
        if not one_by_one:
            start_groups(self.groups())
        self.weight_sync = WeightSync(cfg, self.policy, self.rollout)  # inprocess | reload | nccl | ipc

    def groups(self) -> list[WorkerGroup]:
        return [self.rollout, self.policy, self.prm]

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
        return PRMView(prm_tokenizer, self.task.system_prompt, self.cfg.data.step_delimiter)

    # ----- evaluation and checkpoints -----------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Held-out greedy (and sampled) accuracy through the rollout actors: `tdrm-rl eval`'s code path."""
        temperature = self.cfg.rollout.eval_temperature if self.cfg.trainer.eval_sampled else None
        return evaluate_policy(self.generate, self.task, self.eval_set, EvalSettings(temperature=temperature)).metrics

    def state_dict(self) -> dict[str, Any]:
        """The driver's run state (JSON-able): everything a checkpoint holds besides weights and engines."""
        return {
            "weights_version": self.weights_version,
            "sampler": self.sampler.state_dict(),
            "driver_rng": capture_rng(),
            "worker_rng": {g.role: g.run("rng_state", stage="save_rng") for g in self.groups()},
            "counters": dict(self.counters),
            "reference": self.reference_identity,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; the rollout workers get the restored policy's weights."""
        if state["reference"] != self.reference_identity:
            raise ValueError(f"trained against reference {state['reference']['path']}, this run uses "
                             f"{self.reference_identity['path']} (model.policy_path changed)")
        self.weights_version = state["weights_version"]
        self.weight_sync.sync(self.weights_version)
        self.sampler.load_state_dict(state["sampler"])
        restore_rng(state["driver_rng"])
        for group in self.groups():
            self.set_worker_rng(group, state["worker_rng"][group.role], stage="load_rng")
        live_restarts = self.counters.get("restarts", 0)
        self.counters.update(state.get("counters", {}))
        # Restarts are history, not state: going back to a checkpoint after a restart must not forget it.
        self.counters["restarts"] = max(live_restarts, self.counters.get("restarts", 0))

    def save_models(self, folder: str) -> None:
        """HF weights of policy and PRM, and their DeepSpeed engine states (optimizer, scheduler), into `folder`."""
        self.free_rollout_gpu()  # the saves gather weights on the trainers' GPUs
        for group in (self.policy, self.prm):
            group.run("save", os.path.join(folder, group.role), stage=f"save_{group.role}")
            group.run("save_state", os.path.join(folder, f"{group.role}_engine"), stage=f"save_{group.role}_state")

    def save_checkpoint(self, step: int) -> str:
        return write_checkpoint(self.out, step, self.state_dict(), self.save_models, to_yaml(self.cfg),
                                self.cfg.trainer.keep_checkpoints)

    def last_checkpoint(self, step: int, saved_at: int) -> str | None:
        """The checkpoint a run ends on at `step`: written unless this step has one; None with save_every=-1."""
        if self.cfg.trainer.save_every < 0:
            return None
        return latest_checkpoint(self.out) if saved_at == step else self.save_checkpoint(step)

    # ----- faults ---------------------------------------------------------------------------------
    def recover(self, died: WorkerDied, rollout_rng: list | None = None, rewind: bool = False) -> int | None:
        """Restart the dead role. Rollout: reload the last synced policy weights and the ranks' RNG states from
        before the failed attempt (`rollout_rng`), so the retry samples what the first try would have (returns None).
        Policy / PRM, or `rewind` (the step's update already ran: a retry would apply it twice): their state is lost,
        so the whole run goes back to the newest whole checkpoint (returns its step).
        """
        self.counters["restarts"] += 1
        limit = self.cfg.cluster.max_restarts
        if self.counters["restarts"] > limit:
            raise RoleError(f"{died} (restarts used up: cluster.max_restarts={limit})")
        group = {g.role: g for g in self.groups()}[died.role]
        logging.getLogger("tdrm_rl").warning("%s; restarting %s (%d of %d)", died, died.role,
                                             self.counters["restarts"], limit)
        group.restart()
        if died.role in ("rollout", "policy"):
            # The new actors hold no weight-sync state: under nccl they never joined the weight group (no
            # communicator), and the survivors' communicator names a dead peer. Build the sync anew (new port, new
            # communicators on both sides) before anything moves weights again.
            self.weight_sync = WeightSync(self.cfg, self.policy, self.rollout)
        if died.role == "rollout" and not rewind:
            self.weight_sync.sync(self.weights_version)  # the last synced weights, by the run's sync mode
            if rollout_rng is not None:
                self.set_worker_rng(self.rollout, rollout_rng, stage="restore_rng")
            return None
        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            raise RoleError(f"{died}; no checkpoint to go back to (set trainer.save_every)")
        return self.resume_from(ckpt)

    def set_worker_rng(self, group: WorkerGroup, ranks: list, stage: str) -> None:
        """Every rank's RNG state, from what `rng_state` returned for each."""
        if len(ranks) != len(group.actors):
            raise ValueError(f"{group.role} had {len(ranks)} ranks, this run has {len(group.actors)}")
        group.get([a.set_rng_state.remote(r) for a, r in zip(group.actors, ranks)], stage=stage)

    def rollout_rng(self) -> list | None:
        """The rollout ranks' RNG states, for a restart to continue from. None under async rollout (the call would
        wait behind the rollout running ahead) or when a rank is dead (the call after this one recovers)."""
        if self.cfg.trainer.async_rollout:
            return None
        try:
            return self.rollout.run("rng_state", stage="save_rng")
        except WorkerDied:
            return None

    def resume_from(self, ckpt: str) -> int:
        """Load a checkpoint into the running workers; drop metrics rows logged after it."""
        try:
            state = read_state(ckpt)
            for group in (self.policy, self.prm):
                group.run("load_state", os.path.join(ckpt, f"{group.role}_engine"), stage=f"load_{group.role}_state")
            self.load_state_dict(state)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"cannot resume from {ckpt}: {e}") from None
        self.pending = None  # an async rollout in flight samples the problems and weights of the abandoned steps
        step = int(state["step"])
        self.logged = self.logger.truncate(step)
        return step

    def attempt(self, work: Callable[[], Any]) -> tuple[Any, int | None]:
        """`work()`, retried after a rollout worker died in it, from the sampler, RNG and pending-rollout states it
        started from (a retried step sees the same problems and samples). (result, None), or (None, step) when
        recovery went back to a checkpoint."""
        sampler, rng, version, pending = self.sampler.state_dict(), capture_rng(), self.weights_version, self.pending
        rollout_rng = self.rollout_rng()
        while True:
            try:
                return work(), None
            except WorkerDied as died:
                # A weights version moved on: the update ran and the weight sync began.
                rewound = self.recover(died, rollout_rng, rewind=self.weights_version != version)
                if rewound is not None:
                    return None, rewound
                self.sampler.load_state_dict(sampler)
                restore_rng(rng)
                if pending is not None:  # async: the dead ranks' rollout of this step's problems, again
                    refs = self.submit_generate([p.prompt for p in pending.problems], self.cfg.rollout.group_size, {})
                    pending = pending._replace(refs=refs, version=self.weights_version)
                self.pending = pending

    def timed_evaluate(self) -> dict[str, float]:
        timer = StageTimer()
        with timer("eval"):
            metrics = self.evaluate()
        return {**metrics, **timer.seconds}

    def run_step(self, step: int) -> tuple[dict[str, Any] | None, int | None]:
        """One step and its evaluation, each retried after a worker death. Returns (metrics, None), or
        (None, step to continue after) when recovery rewound the run to a checkpoint."""
        tc = self.cfg.trainer
        metrics, rewound = self.attempt(lambda: self.step(step))
        if rewound is None and (step % tc.eval_every == 0 or step == tc.total_steps):
            evals, rewound = self.attempt(self.timed_evaluate)  # not the step again: its update is done
            metrics = None if rewound is not None else {**metrics, **evals}
        return metrics, rewound

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
            first, _ = self.attempt(self.evaluate)  # a rollout death here only restarts it: nothing to rewind
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
        return summarize_run(evals, ckpt, time.time() - start, len(self.eval_set), self.logger.path, self.out)
