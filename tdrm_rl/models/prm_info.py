"""What a PRM checkpoint says about its values: the objective it was trained with and the discount they carry.

Written next to the weights (`tdrm_prm.json`) by `prm-train`, the warm-up and every RL checkpoint's PRM, and read
by `bon` and `make paper`: the first-error rule and the undiscounted step AUC divide a TD-PRM's values by
gamma^(T-1-i), so a reader must know gamma. A checkpoint from elsewhere has no file: discount 1 is assumed.
"""
from __future__ import annotations

import json
import os
from typing import Any

from tdrm_rl.config import RunConfig

PRM_INFO_FILE = "tdrm_prm.json"
TD_OBJECTIVES = ("td", "td_lambda")


def value_discount(objective: str, cfg: RunConfig) -> float:
    """The discount a PRM's values carry: prm.gamma for the TD objectives, 1 for label-trained PRMs."""
    return float(cfg.prm.gamma) if objective in TD_OBJECTIVES else 1.0


def online_objective(cfg: RunConfig) -> str:
    """The objective of RL's online PRM updates: TD, n-step or TD(lambda) by prm.td_mode."""
    return "td_lambda" if cfg.prm.td_mode == "lambda" else "td"


def write_prm_info(ckpt: str, objective: str, cfg: RunConfig) -> None:
    info = {"objective": objective, "discount": value_discount(objective, cfg), "n_step": cfg.prm.n_step,
            "gamma": cfg.prm.gamma, "lam": cfg.prm.lam, "td_mode": cfg.prm.td_mode}
    with open(os.path.join(ckpt, PRM_INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)


def read_prm_info(ckpt: str) -> dict[str, Any]:
    """What `write_prm_info` wrote ({} for a checkpoint from elsewhere: discount 1 is assumed)."""
    try:
        with open(os.path.join(ckpt, PRM_INFO_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
