"""Held-out evaluation of a policy checkpoint (`tdrm-rl eval`, and `train`'s in-run evaluation).

    core.py         evaluate_policy: greedy / sampled accuracy, pass@k, maj@k (one code path for train and eval)
    checkpoints.py  which policy (and PRM) a path names: an HF folder, a checkpoint, or a run folder's newest one
    rerank.py       PRM-reranked Best-of-N over the sampled responses (`tdrm-rl eval --prm`)
"""
