"""Which model folder a path given to `tdrm-rl eval` names.

    an HF model folder (config.json)     itself
    a checkpoint (step_N/ with COMPLETE)  its policy/ (and prm/)
    a run folder (trainer.output_dir)     the newest complete checkpoint under its checkpoints/
                                         (tdrm_rl/rl/checkpoint.py finds it)

Anything else is passed on unchanged: the model-folder check names what is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from tdrm_rl.rl.checkpoint import checkpoint_root, is_complete, latest_checkpoint


class CheckpointNotFound(ValueError):
    """A run folder without a complete checkpoint: a user error, one line."""


@dataclass
class ModelSource:
    policy: Optional[str]  # the policy's HF folder (None: the embedded warm start)
    prm: Optional[str] = None  # the PRM saved beside it, when the path named a checkpoint or a run
    checkpoint: Optional[str] = None  # the checkpoint folder it came from
    run: Optional[str] = None  # the run folder, when the path named one


def _from_checkpoint(ckpt: str, run: Optional[str] = None) -> ModelSource:
    prm = os.path.join(ckpt, "prm")
    return ModelSource(os.path.join(ckpt, "policy"), prm if os.path.isdir(prm) else None, ckpt, run)


def resolve_model_source(path: Optional[str]) -> ModelSource:
    """The policy (and PRM) folder `path` names: an HF folder as is, a checkpoint's policy/, a run's newest."""
    if not path or not os.path.isdir(path) or os.path.isfile(os.path.join(path, "config.json")):
        return ModelSource(path)
    if is_complete(path):
        return _from_checkpoint(path)
    if os.path.isdir(checkpoint_root(path)):
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise CheckpointNotFound(f"{path} is a run folder with no complete checkpoint under "
                                     f"{checkpoint_root(path)} (a run writes one at its end, or every "
                                     "trainer.save_every steps)")
        return _from_checkpoint(ckpt, path)
    return ModelSource(path)
