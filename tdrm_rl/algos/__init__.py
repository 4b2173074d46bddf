"""RL algorithms: advantage estimators and policy losses behind two registries (verl-style).

A new estimator or loss is a function plus a name (see `registry.py`):

    @register_adv_estimator("my_est")
    def my_estimator(batch, token_rewards, cfg) -> EstimatorOutput: ...

Modules: registry, masked (reductions), steps (step <-> token axis), gae (step-level GAE),
rewards (token rewards, dense PRM rewards), estimators, losses, dynamic_sampling (DAPO), pipeline
(the driver's advantage stage as one call).
"""

from tdrm_rl.algos.dynamic_sampling import DynamicSampler, informative_groups
from tdrm_rl.algos.estimators import (
    EstimatorOutput,
    broadcast_sequence_advantages,
    drgrpo_advantages,
    group_mean,
    group_zscore,
    grpo_advantages,
    rloo_advantages,
)
from tdrm_rl.algos.gae import step_gae
from tdrm_rl.algos.losses import (
    KL_ESTIMATORS,
    LOSS_AGG_MODES,
    agg_weight,
    aggregate_loss,
    kl_penalty,
    ppo_clip_loss,
)
from tdrm_rl.algos.masked import masked_mean, masked_sum, masked_whiten
from tdrm_rl.algos.pipeline import advantage_metrics, build_token_rewards, compute_advantages
from tdrm_rl.algos.registry import (
    ADV_ESTIMATORS,
    POLICY_LOSSES,
    estimator_needs_groups,
    get_adv_estimator,
    get_policy_loss,
    register_adv_estimator,
    register_policy_loss,
)
from tdrm_rl.algos.rewards import DENSE_MODES, process_step_rewards, token_rewards

__all__ = [
    "ADV_ESTIMATORS", "POLICY_LOSSES", "register_adv_estimator", "get_adv_estimator", "estimator_needs_groups",
    "register_policy_loss",
    "get_policy_loss", "masked_sum", "masked_mean", "masked_whiten", "group_zscore", "group_mean",
    "grpo_advantages", "drgrpo_advantages", "rloo_advantages", "broadcast_sequence_advantages", "EstimatorOutput",
    "step_gae", "ppo_clip_loss", "aggregate_loss", "agg_weight", "kl_penalty", "LOSS_AGG_MODES", "KL_ESTIMATORS",
    "DENSE_MODES", "process_step_rewards", "token_rewards", "build_token_rewards", "compute_advantages",
    "advantage_metrics", "DynamicSampler", "informative_groups",
]
