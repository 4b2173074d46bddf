"""Time to accuracy (issue 18, item 1): tdrm-rl GRPO+TDRM vs TRL's GRPOTrainer, wall seconds to a held-out target.

From the same warm start (the recipe's own SFT warm start of the tiny policy, which `make run` trains from), on the
embedded arithmetic task:
  tdrm-rl  the recipe (recipes/grpo_tdrm.yaml): its warm-up PRM, trained online with TD, 0.8 rule + 0.2 PRM;
  TRL      GRPOTrainer with the rule reward only, at the recipe's settings (bench/trl_compare.grpo_trainer).
Both see the same training problems in the same order (TrainSampler at the run's seed). Every EVAL_EVERY steps
the current weights are scored with tdrm_rl.evaluation.core (greedy, the same EVAL_PROBLEMS held-out problems);
an arm stops when it reaches warm accuracy + TARGET_MARGIN or at the step cap. Wall time counts the steps only
(PRM scoring and TD updates included); evaluation time and setup are reported beside it, not in it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from bench.common import Table, median, timed

EVAL_EVERY = 5  # an eval (200 greedy answers) measured 0.5-5 s, under a step: every 5 keeps it a side cost
EVAL_PROBLEMS = 200  # one problem = 0.5 points, so the 4-point margin is 8 more problems solved
TARGET_MARGIN = 0.04  # 4 points: well above the noise of greedy accuracy between neighbouring checkpoints
# Full mode, per run. Both arms to the cap, 2 seeds: 2 x 50 x (3.4 + 2.7 s a step, quiet machine) + 20 evals x ~3 s
# + ~45 s of trainer setup ~ 12 minutes (~18 at the 7.5 + 1.5 s a step measured on a loaded machine): <= ~15 min.
STEP_CAP = 50
QUICK_STEP_CAP = 10  # --quick: two evaluations per arm, one seed
SEEDS, QUICK_SEEDS = (0, 1), (0,)
RATIO_TARGET, RATIO_MOONSHOT = 0.5, 0.3
TARGET_NAME = "time to accuracy: tdrm-rl GRPO+TDRM <= 0.5x TRL wall time to warm+4 points (moonshot 0.3x)"
ARMS = {"tdrm": "tdrm-rl GRPO+TDRM", "trl": "TRL GRPOTrainer"}
# Float sums like 105/200 + 0.04 (0.5650000000000001) must not hide a hit of exactly 113/200.
_TOL = 1e-9


@dataclass(frozen=True)
class EvalPoint:
    step: int
    wall_s: float  # training wall seconds since the arm's first step, evaluations excluded
    prompts: int  # training prompts consumed so far
    accuracy: float  # held-out greedy accuracy


@dataclass
class ArmRun:
    arm: str  # "tdrm" | "trl"
    seed: int
    curve: list[EvalPoint] = field(default_factory=list)
    eval_s: float = 0.0  # all evaluations of this run, not in curve's wall_s
    setup_s: float = 0.0  # building the trainer (actors, DeepSpeed / GRPOTrainer), not in wall_s


def reached(accuracy: float, target: float) -> bool:
    return accuracy + _TOL >= target


def first_reach(curve: Sequence[EvalPoint], target: float) -> Optional[EvalPoint]:
    """The first evaluation (in step order) whose accuracy reaches `target`, or None."""
    return next((p for p in sorted(curve, key=lambda p: p.step) if reached(p.accuracy, target)), None)


def ratio_verdict(tdrm_s: Sequence[Optional[float]], trl_s: Sequence[Optional[float]],
                  trl_stop_s: Sequence[float]) -> dict[str, Any]:
    """The Targets row from each seed's wall seconds to the target (None: not reached within the cap).

    ratio = median(tdrm-rl) / median(TRL). TRL not reached: its wall time at the cap is a lower bound of its time
    to target, so ratio <= bound, and the target is met only if that bound already is <= RATIO_TARGET.
    """
    if not tdrm_s or any(s is None for s in tdrm_s):
        return {"target": TARGET_NAME, "ratio": None, "met": False,
                "measured": f"not reached by {ARMS['tdrm']} within the cap"}
    tdrm = median(tdrm_s)
    if any(s is None for s in trl_s):
        bound = tdrm / median([s if s is not None else stop for s, stop in zip(trl_s, trl_stop_s)])
        return {"target": TARGET_NAME, "ratio": None, "ratio_upper_bound": bound, "met": bound <= RATIO_TARGET,
                "measured": f"not reached by {ARMS['trl']} within the cap; ratio <= {bound:.2f}x"}
    ratio = tdrm / median(trl_s)
    moon = "met" if ratio <= RATIO_MOONSHOT else "missed"
    return {"target": TARGET_NAME, "ratio": ratio, "met": ratio <= RATIO_TARGET,
            "measured": f"{ratio:.2f}x (moonshot {RATIO_MOONSHOT}x {moon})"}


def summarize(run: ArmRun, target: float, prompts_per_step: int) -> dict[str, Any]:
    """One run's row: time / prompts / steps to target (None if not reached), and where it stopped."""
    hit, last = first_reach(run.curve, target), run.curve[-1]
    steps = [p for p in run.curve if p.step > 0]
    return {"arm": run.arm, "seed": run.seed, "reached": hit is not None,
            "wall_s_to_target": hit.wall_s if hit else None, "prompts_to_target": hit.prompts if hit else None,
            "steps_to_target": hit.step if hit else None, "final_step": last.step, "final_accuracy": last.accuracy,
            "final_wall_s": last.wall_s, "step_s": last.wall_s / last.step if last.step else float("nan"),
            "eval_s": run.eval_s, "evals": len(steps), "setup_s": run.setup_s,
            "prompts_per_step": prompts_per_step, "curve": [vars(p) for p in run.curve]}


# ----- the two arms (real trainers) ------------------------------------------------------------------------------

def greedy_accuracy(generate: Callable, task: Any, problems: Sequence[Any]) -> float:
    from tdrm_rl.evaluation.core import EvalSettings, evaluate_policy

    return evaluate_policy(generate, task, problems, EvalSettings(temperature=None)).metrics["eval/greedy_accuracy"]


def run_tdrm(build: Callable[..., Any], seed: int, warm: float, target: float, cap: int,
             problems: Sequence[Any]) -> ArmRun:
    """`build(name, *overrides)`: a fresh BenchTrainer of the recipe from the warm start."""
    run = ArmRun("tdrm", seed, [EvalPoint(0, 0.0, 0, warm)])
    run.setup_s, trainer = timed(lambda: build(f"tta-tdrm-{seed}", f"trainer.seed={seed}"))
    per_step = trainer.cfg.rollout.prompts_per_step
    wall = 0.0
    try:
        for step in range(1, cap + 1):
            wall += timed(lambda: trainer.step(step))[0]
            if step % EVAL_EVERY and step < cap:
                continue
            dt, acc = timed(lambda: greedy_accuracy(trainer.generate, trainer.task, problems))
            run.eval_s += dt
            run.curve.append(EvalPoint(step, wall, step * per_step, acc))
            print(f"time to accuracy: {ARMS['tdrm']} seed {seed} step {step}: {acc:.3f} (target {target:.3f}), "
                  f"{wall:.0f} s", flush=True)
            if reached(acc, target):
                break
    finally:
        trainer.shutdown()
    return run


def run_trl(cfg: Any, policy_path: str, task: Any, seed: int, warm: float, target: float, cap: int,
            problems: Sequence[Any], worker: Any) -> ArmRun:
    """`worker`: an in-process HF rollout worker (tdrm-rl's); each evaluation loads TRL's current weights into it."""
    from transformers import TrainerCallback

    from bench.trl_compare import grpo_trainer
    from tdrm_rl.data.sampler import TrainSampler

    run = ArmRun("trl", seed, [EvalPoint(0, 0.0, 0, warm)])
    per_step, group = cfg.rollout.prompts_per_step, cfg.rollout.group_size
    sampler = TrainSampler(task, cfg.data.train_size, seed)  # the problems tdrm-rl's run at this seed trains on
    train = [p for _ in range(cap + 1) for p in sampler.next(per_step)]

    class EvalEvery(TrainerCallback):
        start = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step = state.global_step
            if step % EVAL_EVERY and step < cap:
                return
            wall = time.perf_counter() - self.start - run.eval_s
            t0 = time.perf_counter()
            model = grpo.accelerator.unwrap_model(grpo.model)
            worker.update_weights({k: v.detach() for k, v in model.state_dict().items()}, step)
            acc = greedy_accuracy(worker.generate, task, problems)
            run.eval_s += time.perf_counter() - t0
            run.curve.append(EvalPoint(step, wall, step * per_step, acc))
            print(f"time to accuracy: {ARMS['trl']} seed {seed} step {step}: {acc:.3f} (target {target:.3f}), "
                  f"{wall:.0f} s", flush=True)
            if reached(acc, target):
                control.should_training_stop = True

    run.setup_s, grpo = timed(lambda: grpo_trainer(cfg, policy_path, task, train, per_step * group, cap,
                                                   [EvalEvery()], seed=seed))
    grpo.train()
    return run


def run(cfg: Any, policy_path: str, build: Callable[..., Any], quick: bool) -> tuple[dict[str, Any], list[Table]]:
    """`cfg`: the bench's recipe RunConfig (seed 0); `build(name, *overrides)`: a fresh BenchTrainer."""
    try:
        import trl
    except ImportError as e:
        msg = f"time to accuracy skipped: {e} (run through `make bench`, which installs trl in .venv-bench)"
        print(msg)
        return {"skipped": msg, "targets": [{"target": TARGET_NAME, "measured": "not run (trl missing)",
                                             "met": None}]}, []
    from tdrm_rl.prm_tools.offline import local_rollout_worker
    from tdrm_rl.prm_tools.warmup import ensure_prm, warmup_cache_dir
    from tdrm_rl.tasks.prompts import load_prompted_task

    cap, seeds = (QUICK_STEP_CAP, QUICK_SEEDS) if quick else (STEP_CAP, SEEDS)
    # The recipe's warm-up PRM (cached), built once from seed 0 and shared: one warm start for every run.
    print("time to accuracy: the recipe's warm-up PRM (built once, then cached under model.cache_dir)", flush=True)
    warmup_s, prm_path = timed(lambda: ensure_prm(cfg, policy_path, progress=False))
    warm_dir = warmup_cache_dir(cfg, policy_path) if prm_path else None
    task, _ = load_prompted_task(cfg, policy_path)
    problems = task.eval_problems(EVAL_PROBLEMS)
    worker = local_rollout_worker(cfg, policy_path)
    warm_eval_s, warm = timed(lambda: greedy_accuracy(worker.generate, task, problems))
    target = warm + TARGET_MARGIN
    extra = [f"model.prm_path={prm_path}"] if prm_path else []
    runs: list[ArmRun] = []
    for seed in seeds:  # alternating arms, so both see the same machine load
        runs.append(run_tdrm(lambda name, *o: build(name, *extra, *o), seed, warm, target, cap, problems))
        runs.append(run_trl(cfg, policy_path, task, seed, warm, target, cap, problems, worker))
    per_step = cfg.rollout.prompts_per_step
    rows = [summarize(r, target, per_step) for r in runs]
    by_arm = {a: [r for r in rows if r["arm"] == a] for a in ARMS}
    verdict = ratio_verdict([r["wall_s_to_target"] for r in by_arm["tdrm"]],
                            [r["wall_s_to_target"] for r in by_arm["trl"]],
                            [r["final_wall_s"] for r in by_arm["trl"]])
    row_target = {k: verdict[k] for k in ("target", "measured", "met")}
    table = Table(f"Time to accuracy ({'quick' if quick else 'full'}, trl {trl.__version__}): held-out greedy "
                  f"accuracy {warm:.3f} (warm start) -> {target:.3f}, {EVAL_PROBLEMS} problems every {EVAL_EVERY} "
                  f"steps, cap {cap} steps, {per_step} prompts x G={cfg.rollout.group_size} per step",
                  ["arm", "seed", "reached", "wall s to target", "prompts to target", "steps to target",
                   "final accuracy (step)", "train s/step", "eval s (excluded)", "setup s (excluded)"])
    for r in rows:
        table.add(ARMS[r["arm"]], r["seed"], "yes" if r["reached"] else "no",
                  _opt(r["wall_s_to_target"]), _opt(r["prompts_to_target"]), _opt(r["steps_to_target"]),
                  f"{r['final_accuracy']:.3f} ({r['final_step']})", r["step_s"], r["eval_s"], r["setup_s"])
    warmup_build_s = _warmup_build_s(warm_dir)
    table.add(f"{ARMS['tdrm']}: PRM warm-up (one-off, cached; not in wall s)", "", "", "", "", "", "", "", "",
              _opt(warmup_build_s))
    ratio = verdict.get("ratio")
    table.add("ratio tdrm-rl / TRL (median wall s to target)", "", "", _opt(ratio) if ratio is not None
              else verdict["measured"], "", "", "", "", "", "")
    data = {"warm_accuracy": warm, "target_accuracy": target, "target_margin": TARGET_MARGIN,
            "eval_every": EVAL_EVERY, "eval_problems": EVAL_PROBLEMS, "step_cap": cap, "seeds": list(seeds),
            "warm_eval_s": warm_eval_s, "prm_warmup": {"path": prm_path, "wall_s_here": warmup_s,
                                                       "build_s": warmup_build_s},
            "runs": rows, "ratio": ratio, "verdict": verdict, "targets": [row_target]}
    return data, [table]


def _opt(v: Any) -> Any:
    return "-" if v is None else v


def _warmup_build_s(folder: Optional[str]) -> Optional[float]:
    """Seconds the cached warm-up PRM took to build (its summary), a one-off cost of the recipe not in the ratio."""
    import json
    import os

    if folder is None:
        return None
    from tdrm_rl.prm_tools.warmup import SUMMARY_FILE

    with open(os.path.join(folder, SUMMARY_FILE)) as f:
        return float(json.load(f)["seconds"])
