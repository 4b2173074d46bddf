"""Offline PRM tools on top of the RL workers: sample rollouts (with Monte-Carlo step labels), train a
PRM from a rollouts file, score rollouts, run Best-of-N and PRM-guided search.

Workers are built in-process (the worker classes are plain Python); the same RolloutWorker and
PRMWorker code paths run as in online RL, so there is one implementation of generation, step
values and the TD update.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from typing import Any, Optional, Sequence

import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.prm_tools.bon import BON_AGGREGATIONS, aggregate_steps, bon_sizes, bon_table
from tdrm_rl.config import RunConfig
from tdrm_rl.data.rollout_file import (Trajectory, exact_step_labels, mc_step_labels, records_batch,
                                       step_prefix_lengths, step_success_table)
from tdrm_rl.prm_tools.search import PRMPrefixScorer, SearchSettings, step_search
from tdrm_rl.prm_tools.smoothness import smoothness, step_token_counts, td_error_by_step
from tdrm_rl.data.segment import split_steps
from tdrm_rl.tasks import get_task
from tdrm_rl.tasks.answers import final_answer
from tdrm_rl.algos.td import terminal_mask
from tdrm_rl.rl.tracking import MetricsLogger

OBJECTIVES = ("td", "td_lambda", "scalar", "orm", "exact")


# ----- in-process workers ---------------------------------------------------------------------------

def local_rollout_worker(cfg: RunConfig, policy_path: str, backend: str = "hf"):
    """A rollout worker in this process: HF generate, or a vLLM engine (backend="vllm", rollout.* settings)."""
    from tdrm_rl.workers.rollout import rollout_worker_class

    worker = rollout_worker_class(backend)(cfg, policy_path, num_threads=cfg.trainer.torch_threads)
    worker.setup()
    return worker


def close_rollout_worker(worker) -> None:
    """Stop a vLLM worker's engine core process now rather than at interpreter exit (HF: nothing to do)."""
    llm = getattr(worker, "llm", None)
    if llm is not None:
        llm.llm_engine.engine_core.shutdown()


def local_prm_worker(cfg: RunConfig, model_path: str, init_from_policy: bool):
    """A one-rank PRMWorker in this process (DeepSpeed on a single-rank gloo / NCCL group)."""
    from tdrm_rl.workers.base import free_port
    from tdrm_rl.workers.prm import PRMWorker

    worker = PRMWorker(cfg, model_path, init_from_policy=init_from_policy, num_threads=cfg.trainer.torch_threads)
    worker.setup_distributed("127.0.0.1", free_port())  # a no-op once this process has a group
    worker.setup()
    return worker


# ----- rollouts ---------------------------------------------------------------------------------------

def to_trajectories(task: Any, problems: Sequence[Any], gen, n: int, delimiter: str,
                    outcome: Optional[Sequence[float]] = None) -> list[Trajectory]:
    """Generated responses (prompt-major, n per problem) as verified trajectories; `outcome` skips re-verifying."""
    records = []
    for j, (pids, rids, text) in enumerate(zip(gen.prompt_ids, gen.response_ids, gen.response_text)):
        prob = problems[j // n]
        score = task.verify(text, prob.answer) if outcome is None else float(outcome[j])
        records.append(Trajectory(problem_id=j // n, prompt=prob.prompt, answer=prob.answer, response=text,
                                  prompt_ids=list(pids), response_ids=list(rids), steps=split_steps(text, delimiter),
                                  outcome=score, pred=final_answer(task, text)))
    return records


def sample_rollouts(cfg: RunConfig, rollout, problems: Sequence[Any], n: int, mc_samples: int = 0,
                    sampling: Optional[dict] = None, task: Any = None) -> list[Trajectory]:
    """N solutions per problem, split into steps, verified; with mc_samples = k, each non-final step
    prefix is completed k times and `mc_success` counts the completions that reach the answer.
    `task`: the task the problems came from (tdrm_rl.tasks.prompts.load_prompted_task); None = get_task(cfg.data)."""
    task = task or get_task(cfg.data)
    sampling = dict(sampling or {})
    gen = rollout.generate([p.prompt for p in problems], n, sampling)
    records = to_trajectories(task, problems, gen, n, cfg.data.step_delimiter)
    if mc_samples > 0:
        add_mc_labels(cfg, rollout, records, mc_samples, sampling, task)
    return records


def add_mc_labels(cfg: RunConfig, rollout, records: list[Trajectory], k: int, sampling: dict, task: Any = None) -> None:
    """Fill `mc_success` by completing every non-final step prefix k times (one generate call)."""
    task = task or get_task(cfg.data)
    tokenizer = rollout.tokenizer
    batch = records_batch(records, tokenizer, cfg.data.step_delimiter)
    prefix_lens = step_prefix_lengths(batch)
    requests = []  # (record, step index, prefix text)
    for b, (r, lens) in enumerate(zip(records, prefix_lens)):
        for i, length in enumerate(lens[:-1]):  # the final step holds the answer: its label is the outcome
            requests.append((b, i, tokenizer.decode(r.response_ids[:length], skip_special_tokens=True)))
    for b, (r, lens) in enumerate(zip(records, prefix_lens)):
        r.mc_samples = k
        r.mc_success = [0] * len(lens)
        if lens:
            r.mc_success[-1] = int(k * r.outcome)
    if not requests:
        return
    gen = rollout.generate([records[b].prompt + prefix for b, _, prefix in requests], k, sampling)
    for j, text in enumerate(gen.response_text):
        b, i, prefix = requests[j // k]
        records[b].mc_success[i] += int(task.verify(prefix + text, records[b].answer))


# ----- PRM training -----------------------------------------------------------------------------------

def objective_config(cfg: RunConfig, objective: str) -> RunConfig:
    """The PRM config an objective trains with: td -> n-step TD, td_lambda -> TD(lambda)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown PRM objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    cfg = copy.deepcopy(cfg)
    if objective == "td":
        cfg.prm.td_mode = "nstep"
    elif objective == "td_lambda":
        cfg.prm.td_mode = "lambda"
    return cfg


def train_prm(cfg: RunConfig, init_path: str, records: list[Trajectory], objective: str, out_dir: str,
              epochs: int = 3, batch_size: int = 64, init_from_policy: bool = True,
              progress: bool = False, keep_worker: bool = False) -> dict[str, Any]:
    """Offline PRM training on a fixed set of trajectories. Every objective sees the same rows in the
    same order and takes the same number of optimizer steps (epochs * ceil(B / batch_size)).

        td, td_lambda: per mini-batch, values from the current network (or the EMA copy, with
                       prm.bootstrap=ema) -> TD targets -> BCE  (PRMWorker.td_update, as online RL)
        scalar:        BCE on the hard Monte-Carlo step labels     (PRMWorker.label_update)
        orm:           BCE on the outcome at the final state only  (PRMWorker.label_update)
        exact:         BCE on the task's exact step labels         (PRMWorker.label_update); a diagnostic
                       ceiling of what the PRM architecture can learn, never a compared method
    """
    cfg = objective_config(cfg, objective)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"prm-train: epochs and batch size must be >= 1 (got {epochs}, {batch_size})")
    t0 = time.perf_counter()
    worker = local_prm_worker(cfg, init_path, init_from_policy)
    batch = records_batch(records, worker.tokenizer, cfg.data.step_delimiter)
    labels = mask = None
    if objective == "scalar":
        success, k = step_success_table(records, batch.step_mask.shape[1])
        labels, mask = mc_step_labels(success, k, batch.step_mask, batch.outcome), batch.step_mask
    elif objective == "orm":
        mask = terminal_mask(batch.step_mask).float()
        labels = batch.outcome[:, None] * mask
    elif objective == "exact":
        labels, mask = exact_step_labels(records, get_task(cfg.data), batch.step_mask), batch.step_mask
        if labels is None:
            raise ValueError(f"prm-train --objective exact: task {cfg.data.task!r} has no exact step labels")
    logger = MetricsLogger(out_dir)
    rng = torch.Generator().manual_seed(cfg.trainer.seed)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(batch), generator=rng)
        for rows in order.split(batch_size):
            mb = batch.select(rows)
            if objective in ("td", "td_lambda"):
                mb.step_logits = worker.values(mb)
                metrics = worker.td_update(mb)
            else:
                metrics = worker.label_update(mb, labels.index_select(0, rows), mask.index_select(0, rows),
                                              terminal_weight=1.0 if objective == "orm" else None)
            step += 1
            logger.log(step, {"epoch": epoch, **metrics})
            if progress:
                loss = metrics.get("prm/td_loss", metrics.get("prm/label_loss"))
                print(f"prm-train[{objective}] epoch {epoch} step {step}: loss {loss:.4f}")
    logger.close()
    ckpt = worker.save(os.path.join(out_dir, "prm"), objective=objective)
    summary = {"objective": objective, "checkpoint": ckpt, "optimizer_steps": step, "trajectories": len(batch),
               "epochs": epochs, "batch_size": batch_size, "seconds": time.perf_counter() - t0,
               "n_step": cfg.prm.n_step, "gamma": cfg.prm.gamma, "lam": cfg.prm.lam, "bootstrap": cfg.prm.bootstrap}
    with open(os.path.join(out_dir, "prm_train.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if keep_worker:  # the caller goes on scoring with the trained network (no reload)
        summary["worker"] = worker
    return summary


# ----- scoring, Best-of-N, smoothness -------------------------------------------------------------------

def score_records(worker, records: list[Trajectory], delimiter: str) -> Batch:
    """The records as one Batch with the PRM's step logits filled in."""
    batch = records_batch(records, worker.tokenizer, delimiter)
    batch.step_logits = worker.values(batch)
    return batch


@torch.no_grad()
def logprob_verifier_records(policy_path: str, records: list[Trajectory], delimiter: str,
                             micro_batch_size: int = 64) -> Batch:
    """The records as one Batch scored by the policy-log-prob verifier (no training; see
    `tdrm_rl.models.logprobs.min_logprob_step_logits`): the baseline every trained PRM is compared with."""
    from tdrm_rl.models.logprobs import min_logprob_step_logits, token_logprobs
    from tdrm_rl.models.load import load_policy

    model, tokenizer = load_policy(policy_path)
    model.eval()
    batch = records_batch(records, tokenizer, delimiter)
    parts = []
    for mb in batch.chunk(micro_batch_size):
        mb = mb.trim()
        logp = token_logprobs(model, mb.input_ids, mb.attention_mask)
        parts.append(min_logprob_step_logits(logp, mb.response_mask, mb.step_ends, mb.step_mask))
    width = batch.step_mask.shape[1]
    batch.step_logits = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])
    return batch


def step_metrics_eval(scored: dict[str, Batch], records: list[Trajectory], labels: Optional[torch.Tensor],
                      discounts: dict[str, float], aggregations: Sequence[str] = BON_AGGREGATIONS) -> dict[str, Any]:
    """Per PRM: within-problem pairwise accuracy of each aggregation against the outcome, and with exact step
    labels (arith) step AUC overall and per step index and the first-error scores."""
    from tdrm_rl.algos.prm_metrics import FIRST_ERROR_THRESHOLD, ranking_accuracy, step_quality

    out: dict[str, Any] = {}
    for name, batch in scored.items():
        scores = {agg: aggregate_steps(batch.step_logits, batch.step_mask, agg) for agg in aggregations}
        if labels is None:
            out[name] = {f"pairwise/{a}": ranking_accuracy(s, batch.outcome, batch.group_ids) for a, s in scores.items()}
            continue
        values = torch.sigmoid(batch.step_logits.double())
        out[name] = step_quality(values, labels, batch.step_mask, scores, batch.outcome, batch.group_ids,
                                 discount=discounts.get(name, 1.0))
    return {"prms": out, "first_error_rule": f"first step i with V_i / discount^(T-1-i) < {FIRST_ERROR_THRESHOLD}",
            "has_step_labels": labels is not None}


def write_scores_jsonl(path: str, scored: dict[str, Batch], records: list[Trajectory],
                       labels: Optional[torch.Tensor] = None) -> str:
    """One line per trajectory and PRM: trajectories in the rollouts file's order, and for each of them one
    line per PRM (in `scored` order): {"prm", "index" (line in the rollouts file, from 0), "problem_id",
    "outcome", "values": [V(s_i) in [0, 1] per step], "labels": [exact step labels] (tasks that have them)}."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for i, r in enumerate(records):
            for name, batch in scored.items():
                T = int((batch.step_mask[i] != 0).sum())
                row = {"prm": name, "index": i, "problem_id": r.problem_id, "outcome": float(r.outcome),
                       "values": [float(v) for v in torch.sigmoid(batch.step_logits[i, :T].double())]}
                if labels is not None:
                    row["labels"] = [int(v) for v in labels[i, :T]]
                f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path


def problem_grid(records: list[Trajectory]) -> tuple[list[int], int]:
    """Row indices grouped problem-major ([P * N]) and N; every problem must have the same N."""
    by_problem: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_problem.setdefault(r.problem_id, []).append(i)
    sizes = {len(v) for v in by_problem.values()}
    if len(sizes) != 1:
        raise ValueError(f"Best-of-N needs the same number of samples per problem; found {sorted(sizes)}")
    return [i for pid in sorted(by_problem) for i in by_problem[pid]], sizes.pop()


def bon_eval(scored: dict[str, Batch], records: list[Trajectory],
             aggregations: Sequence[str] = BON_AGGREGATIONS) -> dict[str, Any]:
    """Best-of-N curves for each (PRM, aggregation) next to majority vote and pass@N."""
    order, n_max = problem_grid(records)
    idx = torch.tensor(order)
    P = len(order) // n_max
    outcome = torch.tensor([float(r.outcome) for r in records])[idx].view(P, n_max)
    preds = [[records[i].pred for i in order[p * n_max:(p + 1) * n_max]] for p in range(P)]
    scores = {}
    for name, batch in scored.items():
        for agg in aggregations:
            s = aggregate_steps(batch.step_logits, batch.step_mask, agg)
            scores[f"{name}/{agg}"] = s[idx].view(P, n_max)
    sizes = bon_sizes(n_max)
    return {"N": sizes, "problems": P, "accuracy": bon_table(scores, outcome, preds, sizes)}


def smoothness_eval(batch: Batch, n: int = 2, gamma: float = 0.8) -> dict[str, Any]:
    values = torch.sigmoid(batch.step_logits.float())
    tokens = step_token_counts(batch.step_ends, batch.step_mask, batch.prompt_len)
    return {"smoothness_per_step": smoothness(values, batch.step_mask),
            "smoothness_per_token": smoothness(values, batch.step_mask, tokens),
            "td_error_by_step": [None if v != v else float(v) for v in
                                 td_error_by_step(values, batch.step_mask, batch.outcome, n, gamma).tolist()],
            "td_error_n": n, "td_error_gamma": gamma}


# ----- search -----------------------------------------------------------------------------------------------

def search_eval(cfg: RunConfig, rollout, prm, problems: Sequence[Any], settings: SearchSettings,
                task: Any = None) -> dict[str, Any]:
    """Accuracy and generated tokens of PRM-guided step search over `problems` (`task`: the one they came from,
    tdrm_rl.tasks.prompts.load_prompted_task; None = get_task(cfg.data))."""
    task = task or get_task(cfg.data)
    prompts = [p.prompt for p in problems]
    scorer = PRMPrefixScorer(prm.values, prm.tokenizer, prompts, settings.delimiter)
    t0 = time.perf_counter()
    res = step_search(prompts, rollout.generate, scorer, settings)
    correct = [task.verify(node.text, p.answer) for node, p in zip(res.best, problems)]
    return {"accuracy": sum(correct) / max(1, len(correct)), "tokens_generated": res.tokens_generated,
            "tokens_per_problem": res.tokens_generated / max(1, len(problems)), "prm_scored": res.prm_scored,
            "cache_hits": res.cache_hits, "seconds": time.perf_counter() - t0,
            "beam_width": settings.beam_width, "num_branch": settings.num_branch}


def seeded(seed: int) -> random.Random:
    torch.manual_seed(seed)
    return random.Random(seed)
