"""Checkpoints that resume a run exactly, written so that a crash never leaves one that looks complete.

Layout of `output_dir/checkpoints/step_000012/`:

    policy/, prm/          HF weights (safetensors) + tokenizer (policy: from_pretrained; PRM: models.load.load_prm)
    policy_engine/, prm_engine/
                           optimizer, scheduler and engine counters (DeepSpeed checkpoint), plus the PRM's
                           EMA target (ema_target.safetensors) when prm.bootstrap=ema
    trainer_state.json     step, weights version, sampler (epoch, position, stream state), every RNG state
                           (driver and each worker rank), restart / NaN-guard counters, reference identity
    config.yaml            the resolved config of the run
    COMPLETE               written last: the step and the size of every other file (JSON)

Everything is written into a `.tmp-step_000012-*` folder beside it, COMPLETE last, then the folder is renamed
(tdrm_rl.data.atomic): only a folder named step_N that holds COMPLETE counts as a checkpoint. Resume takes the
newest one that is still whole (every file at its written size, trainer_state.json readable) and names any newer
damaged one it skips. A write that fails (a full disk, a worker's failed save) leaves the older checkpoints as they
were and stops the run with a CheckpointError that names the newest whole one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from typing import Any, Callable, Optional

import torch

from tdrm_rl.data.atomic import atomic_dir
from tdrm_rl.rl.stop import RunStopped

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


def written_sizes(path: str) -> Optional[dict[str, int]]:
    """The file sizes COMPLETE recorded at write time (None for a checkpoint from before they were recorded)."""
    try:
        with open(os.path.join(path, COMPLETE)) as f:
            record = json.load(f)
    except ValueError:  # the plain "step N" marker of older checkpoints
        return None
    return record.get("files") if isinstance(record, dict) else None


def checkpoint_problem(path: str) -> Optional[str]:
    """Why a run cannot resume from the checkpoint at `path`, or None when it is whole: COMPLETE and a readable
    trainer_state.json are there, and every file holds the bytes it was written with. Sizes only: instant at any
    model size, and what a crash, a full disk or a cut-short copy leave behind."""
    if not os.path.isfile(os.path.join(path, COMPLETE)):
        return f"no {COMPLETE} marker"
    try:
        int(read_state(path)["step"])
    except FileNotFoundError:
        return f"no {STATE}"
    except (ValueError, KeyError, TypeError) as e:
        return f"{STATE} is unreadable ({type(e).__name__}: {e})"
    for name, size in (written_sizes(path) or {}).items():
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            return f"{name} is missing"
        if os.path.getsize(full) != size:
            return f"{name} holds {os.path.getsize(full)} bytes, {size} were written"
    return None


def newest_whole(output_dir: str) -> tuple[Optional[str], list[tuple[str, str]]]:
    """The newest whole checkpoint (None if there is none), and the (path, problem) of each newer damaged one."""
    damaged = []
    for _, path in reversed(complete_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, damaged
        damaged.append((path, problem))
    return None, damaged


def say_skipped(damaged: list[tuple[str, str]], used: Optional[str]) -> None:
    """One log line naming the damaged checkpoints newest_whole passed over, and the one used instead."""
    if damaged:
        names = "; ".join(f"{os.path.basename(p)} ({why})" for p, why in damaged)
        logging.getLogger("tdrm_rl").warning("skipping damaged checkpoint %s in %s; using %s", names,
                                             os.path.dirname(damaged[0][0]), used or "none")


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The newest whole checkpoint; a damaged newer one is skipped and named in one log line."""
    path, damaged = newest_whole(output_dir)
    say_skipped(damaged, path)
    return path


def resolve_resume(resume: str, output_dir: str) -> Optional[str]:
    """The checkpoint `trainer.resume` names: None (fresh start), the newest whole one (auto), or a path.

    auto falls back past damaged checkpoints (one log line); when every checkpoint is damaged it refuses to start
    afresh over them."""
    if resume == "none":
        return None
    if resume == "auto":
        path, damaged = newest_whole(output_dir)
        if path is None and damaged:
            raise ValueError(f"trainer.resume=auto: no whole checkpoint in {checkpoint_root(output_dir)}, newest: "
                             f"{os.path.basename(damaged[0][0])} ({damaged[0][1]}); move them away to start afresh")
        say_skipped(damaged, path)
        return path
    if not is_complete(resume):
        raise ValueError(f"trainer.resume={resume!r} is not a complete checkpoint (no {COMPLETE} marker)")
    problem = checkpoint_problem(resume)
    if problem:
        raise ValueError(f"trainer.resume={resume!r} is damaged: {problem}")
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


class CheckpointError(RunStopped):
    """A checkpoint could not be written (full disk, a worker's failed save); the older ones are untouched."""

    def __init__(self, step: int, cause: BaseException, newest: Optional[str]) -> None:
        what = str(cause) if isinstance(cause, RuntimeError) else f"{type(cause).__name__}: {cause}"
        then = (f"the newest whole checkpoint is {newest}: resume from it with trainer.resume=auto once that is fixed"
                if newest else "no earlier checkpoint exists")
        super().__init__(f"checkpoint step_{step:06d} was not written ({what}); {then}")


def written_files(folder: str) -> dict[str, int]:
    """Size of every file under `folder`, by path relative to it."""
    sizes = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(parent, name)
            sizes[os.path.relpath(full, folder)] = os.path.getsize(full)
    return dict(sorted(sizes.items()))


def write_checkpoint(output_dir: str, step: int, state: dict[str, Any], save_models: Callable[[str], None],
                     config_yaml: str, keep: int) -> str:
    """Write a checkpoint for `step`: `save_models(folder)` writes the weights and engine states, `state` (the
    trainer's state_dict) goes to trainer_state.json. Returns the checkpoint folder.

    Raises CheckpointError when any part fails (a full disk, a worker's failed save): the temp folder is removed
    and the older checkpoints are left as they were."""
    final = os.path.join(checkpoint_root(output_dir), f"step_{step:06d}")
    try:
        with atomic_dir(final) as tmp:
            save_models(tmp)
            _fsync_write(os.path.join(tmp, STATE), json.dumps({"step": step, **state}))
            _fsync_write(os.path.join(tmp, "config.yaml"), config_yaml)
            _fsync_write(os.path.join(tmp, COMPLETE), json.dumps({"step": step, "files": written_files(tmp)}))
    except Exception as e:  # OSError, a worker's RoleError, safetensors' own SafetensorError on a full disk, ...
        raise CheckpointError(step, e, latest_checkpoint(output_dir)) from e
    prune(output_dir, keep)
    return final


def read_state(path: str) -> dict[str, Any]:
    with open(os.path.join(path, STATE)) as f:
        return json.load(f)
