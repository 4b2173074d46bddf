"""What `tdrm-rl paper` runs: the plan's sizes, the PRM methods and ablations, the RL arms."""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class PaperPlan:
    seeds: tuple[int, ...] = (0, 1, 2)
    train_problems: int = 128  # training problems for the offline PRMs
    samples_per_problem: int = 4  # trajectories per training problem
    mc_samples: int = 4  # completions per step prefix (ScalarPRM labels)
    prm_epochs: int = 4
    prm_batch_size: int = 64
    bon_problems: int = 100  # held-out problems for Best-of-N
    bon_n: int = 16  # N_max
    search_problems: int = 50  # held-out problems for step search (the first of the Best-of-N set)
    search_branches: tuple[int, ...] = (2, 4, 8, 16)
    beam_width: int = 2
    rl_steps: int = 80  # the prompt budget is rl_steps * rl_prompts_per_step
    rl_prompts_per_step: int = 16
    rl_group_size: int = 8
    rl_eval_size: int = 200
    ablations: bool = True
    rl_seeds: tuple[int, ...] = (0, 1, 2)
    sft_overrides: tuple[str, ...] = ()  # the warm start (cached; the same for every seed)
    # The PRM warm-up both RL arms start from (prm_warmup; cached per seed and shared by the two arms).
    warmup_overrides: tuple[str, ...] = ()


FULL = PaperPlan()
# For tests: every stage and every table row, on tiny sizes; the warm start is the e2e tests' (cached).
QUICK = PaperPlan(seeds=(0, 1), train_problems=8, samples_per_problem=4, mc_samples=2, prm_epochs=1,
                  prm_batch_size=16, bon_problems=8, bon_n=4, search_problems=4, beam_width=1, rl_steps=4,
                  rl_prompts_per_step=4, rl_group_size=4, rl_eval_size=16, ablations=False, rl_seeds=(0,),
                  sft_overrides=("sft.steps=150",),
                  warmup_overrides=("prm_warmup.problems=16", "prm_warmup.samples=4", "prm_warmup.batch_size=16"))

# (label, objective, config overrides). TD(lambda) uses the paper's gamma=1, lambda=0.7.
METHODS = (
    ("ScalarPRM (MC labels)", "scalar", ()),
    ("TD-PRM (n=2, γ=0.8)", "td", ("prm.td_mode=nstep", "prm.n_step=2", "prm.gamma=0.8")),
    ("TD(λ) (γ=1, λ=0.7)", "td_lambda", ("prm.td_mode=lambda", "prm.gamma=1.0", "prm.lam=0.7")),
    ("ORM (outcome only)", "orm", ()),
)
# What the paper varies, for TD: the lookahead n, the discount, a target network, and reward shaping.
ABLATIONS = (
    ("TD n=1, γ=0.8", "td", ("prm.n_step=1", "prm.gamma=0.8")),
    ("TD n=4, γ=0.8", "td", ("prm.n_step=4", "prm.gamma=0.8")),
    ("TD n=2, γ=1.0", "td", ("prm.n_step=2", "prm.gamma=1.0")),
    ("TD n=2, γ=0.8, EMA target (0.9)", "td", ("prm.n_step=2", "prm.gamma=0.8", "prm.bootstrap=ema",
                                                "prm.ema_decay=0.9")),
    ("TD n=2, γ=0.8, step penalty 0.05", "td", ("prm.n_step=2", "prm.gamma=0.8", "prm.shaping=step_penalty",
                                                 "prm.shaping_coef=0.05")),
)
# The untrained verifier every PRM is compared with: V(s_i) = exp(lowest policy token log-prob up to step i).
BASELINE = "policy log-prob verifier (no training)"
# The PRM fields every arm must take from the recipe (issue 14: one improved PRM recipe for every objective).
PRM_RECIPE_FIELDS = ("readout", "lr", "backbone_lr")
# (label, config overrides). Every arm starts from the recipe's warm-up PRM (prm_warmup); the frozen arm keeps
# it as it is, so its gap to the online arm is what the online TD updates add.
RL_METHODS = (
    ("GRPO, rule reward only", ("reward.w_rule=1.0", "reward.w_prm=0.0", "prm.update=frozen")),
    ("GRPO + TDRM (online TD-PRM, 0.8 rule + 0.2 PRM)", ("reward.w_rule=0.8", "reward.w_prm=0.2",
                                                         "prm.update=online")),
    ("GRPO + TDRM, PRM frozen after warm-up (0.8 rule + 0.2 PRM)", ("reward.w_rule=0.8", "reward.w_prm=0.2",
                                                                    "prm.update=frozen")),
)
ONLINE_ARM, FROZEN_ARM = RL_METHODS[1][0], RL_METHODS[2][0]
BUDGET_FRACTIONS = ((1, 4), (1, 2), (1, 1))
