"""Checkpoints that resume a run exactly, written so that a crash never leaves one that looks complete.

Layout of `output_dir/checkpoints/step_000012/`:

    policy/, prm/          HF weights (safetensors) + tokenizer (policy: from_pretrained; PRM: models.load.load_prm)
    policy_engine/, prm_engine/
                           optimizer, scheduler and engine counters (DeepSpeed checkpoint), plus the PRM's
                           EMA target (ema_target.safetensors) when prm.bootstrap=ema
    trainer_state.json     step, weights version, sampler (epoch, position, stream state), every RNG state
                           (driver and each worker rank), restart / NaN-guard counters, reference identity
    config.yaml            the resolved config of the run
    COMPLETE               written last

Everything is written into a `.tmp-step_000012-*` folder beside it, COMPLETE last, then the folder is renamed
(tdrm_rl.data.atomic): only a folder named step_N that holds COMPLETE counts as a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from typing import Any, Callable, Optional

import torch

from tdrm_rl.data.atomic import atomic_dir

COMPLETE = "COMPLETE"
STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


# ----- RNG state ---------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states of this process, as JSON-able data."""
    import numpy as np

    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ----- finding and pruning -----------------------------------------------------------------------
def checkpoint_root(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, COMPLETE)) and os.path.isfile(os.path.join(path, STATE))


def complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint, oldest first. Temp folders and incomplete ones are ignored."""
    root = checkpoint_root(output_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if m and is_complete(path):
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> Optional[str]:
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str, output_dir: str) -> Optional[str]:
    """The checkpoint `trainer.resume` names: None (fresh start), the newest complete one (auto), or a path."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    if not is_complete(resume):
        raise ValueError(f"trainer.resume={resume!r} is not a complete checkpoint (no {COMPLETE} marker)")
    return resume


def prune(output_dir: str, keep: int) -> None:
    """Remove leftover temp folders, and all but the newest `keep` complete checkpoints (keep=0: keep all)."""
    root = checkpoint_root(output_dir)
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name.startswith(".tmp-") or name.endswith(".tmp"):  # a write cut short (older runs: step_N.tmp)
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    if keep > 0:
        for _, path in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


# ----- reference identity ------------------------------------------------------------------------
def model_fingerprint(path: str) -> dict[str, Any]:
    """Identity of an HF checkpoint folder: its path and a hash of config.json + weight file names and sizes.

    Hashing file sizes rather than bytes keeps this instant for multi-GB weights.
    """
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name == "config.json":
            with open(full, "rb") as f:
                digest.update(f.read())
        elif name.endswith(".safetensors"):
            digest.update(f"{name}:{os.path.getsize(full)}".encode())
    return {"path": os.path.abspath(path), "sha256": digest.hexdigest()}


# ----- writing -----------------------------------------------------------------------------------
def _fsync_write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_checkpoint(output_dir: str, step: int, state: dict[str, Any], save_models: Callable[[str], None],
                     config_yaml: str, keep: int) -> str:
    """Write a checkpoint for `step`: `save_models(folder)` writes the weights and engine states, `state` (the
    trainer's state_dict) goes to trainer_state.json. Returns the checkpoint folder."""
    final = os.path.join(checkpoint_root(output_dir), f"step_{step:06d}")
    with atomic_dir(final) as tmp:
        save_models(tmp)
        _fsync_write(os.path.join(tmp, STATE), json.dumps({"step": step, **state}))
        _fsync_write(os.path.join(tmp, "config.yaml"), config_yaml)
        _fsync_write(os.path.join(tmp, COMPLETE), f"step {step}\n")
    prune(output_dir, keep)
    return final


def read_state(path: str) -> dict[str, Any]:
    with open(os.path.join(path, STATE)) as f:
        return json.load(f)
