"""PRM-reranked Best-of-N over an evaluation's sampled responses (`tdrm-rl eval --prm`).

The PRM scores every sampled trajectory (one forward pass each, PRMWorker.values); an aggregation of its step
values (tdrm_rl/prm_tools/bon.py: last, min, mean, product, final) ranks the k samples of each block, and
bon@k is the accuracy of the top-ranked one, over the same disjoint blocks as pass@k and maj@k.
"""

from __future__ import annotations

from typing import Any, Sequence

from tdrm_rl.config import RunConfig
from tdrm_rl.evaluation.core import EvalResult
from tdrm_rl.prm_tools.bon import aggregate_steps, best_of_n_accuracy, bon_sizes


def prm_scored_batch(cfg: RunConfig, prm_path: str, task: Any, problems: Sequence[Any], result: EvalResult,
                     policy_tokenizer: Any):
    """The sampled trajectories as one Batch with the PRM's step logits (re-tokenised for a PRM whose tokenizer or
    chat template differs from the policy's, as in RL: tdrm_rl.tasks.prompts.PRMView)."""
    from tdrm_rl.data.rollout_file import records_batch
    from tdrm_rl.prm_tools.offline import local_prm_worker, to_trajectories
    from tdrm_rl.tasks.prompts import PRMView, same_tokenization

    n = result.sampled_outcome.shape[1]
    records = to_trajectories(task, problems, result.sampled, n, cfg.data.step_delimiter,
                              outcome=result.sampled_outcome.flatten().tolist())
    worker = local_prm_worker(cfg, prm_path, init_from_policy=False)
    batch = records_batch(records, policy_tokenizer, cfg.data.step_delimiter)
    if not same_tokenization(policy_tokenizer, worker.tokenizer):
        view = PRMView(worker.tokenizer, getattr(task, "system_prompt", None), cfg.data.step_delimiter)
        batch = view(batch, problems)
    batch.step_logits = worker.values(batch)
    return batch


def best_of_n(batch, outcome, aggregations: Sequence[str]) -> dict[str, dict[int, float]]:
    """{aggregation: {k: bon@k}} for k = 1, 2, 4 ... N. batch: N scored samples per problem, prompt-major;
    outcome [P, N]."""
    P, n = outcome.shape
    out = {}
    for agg in aggregations:
        scores = aggregate_steps(batch.step_logits, batch.step_mask, agg).view(P, n)
        out[agg] = {k: best_of_n_accuracy(scores, outcome, k) for k in bon_sizes(n)}
    return out
