"""The rollout role's contract: what every backend (HF generate, vLLM engine) does the same way.

A backend subclasses `RolloutBackend` and implements three methods:

    generate(prompts, n, sampling) -> Generated   token ids, text and per-token logprobs, prompt-major
    update_weights(state_dict, version) -> int    load the trainer's weights; returns the new version
    logprobs(batch) -> Tensor                     [B, L] logprobs of the batch's tokens, current weights

`sampling` is a dict whose keys are in `SAMPLING_KEYS` (any other key is an error that names it, so a
caller's typo or a knob one backend lacks never goes silently ignored). Every key is optional; a
missing one takes its default. `tests/e2e/test_rollout_contract.py` runs the same calls through both
backends and checks they agree token for token under greedy decoding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from tdrm_rl.config import RunConfig
from tdrm_rl.data.batch import Batch
from tdrm_rl.models.generation import Generated
from tdrm_rl.workers.base import BaseWorker
from tdrm_rl.workers.weight_sync import WeightsLock

# The sampling keys every backend honours, with their meaning and default.
SAMPLING_KEYS: dict[str, str] = {
    "temperature": "float >= 0; 0 is greedy decoding (then n > 1 gives n equal copies). "
                   "Default: rollout.temperature",
    "top_p": "float in (0, 1], nucleus sampling (ignored when greedy). Default: rollout.top_p",
    "max_new_tokens": "int >= 1, at most this many response tokens. Default: rollout.max_new_tokens",
    "stop_at_eos": "bool; True: a response ends at its first EOS token, which it keeps. False: EOS is an "
                   "ordinary token and generation runs on (to a stop string or max_new_tokens). Default: True",
    "stop": "list of non-empty strings (a single string counts as a list of one); a response ends right "
            "after the token that completes the first stop string it generates (in the response, not the "
            "prompt), that token kept, like vLLM's include_stop_str_in_output=True. Default: no stop strings",
}


@dataclass(frozen=True)
class Sampling:
    """A `sampling` dict checked against `SAMPLING_KEYS`, with defaults filled in."""

    temperature: float
    top_p: float
    max_new_tokens: int
    stop_at_eos: bool
    stop: tuple[str, ...]

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def resolve_sampling(sampling: Mapping[str, Any] | None, cfg: RunConfig) -> Sampling:
    """Check `sampling` (unknown keys and bad values are errors) and fill defaults from `cfg.rollout`."""
    sampling = dict(sampling or {})
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise ValueError(f"rollout: unknown sampling key {unknown[0]!r}"
                         f"{f' (and {unknown[1:]})' if len(unknown) > 1 else ''}; "
                         f"a backend honours only {sorted(SAMPLING_KEYS)}")
    rc = cfg.rollout
    stop = sampling.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError(f"rollout: sampling key 'stop' must hold non-empty strings, got {list(stop)!r}")
    out = Sampling(temperature=float(sampling.get("temperature", rc.temperature)),
                   top_p=float(sampling.get("top_p", rc.top_p)),
                   max_new_tokens=int(sampling.get("max_new_tokens", rc.max_new_tokens)),
                   stop_at_eos=bool(sampling.get("stop_at_eos", True)),
                   stop=stop)
    if out.temperature < 0.0:
        raise ValueError(f"rollout: sampling key 'temperature' must be >= 0, got {out.temperature}")
    if not 0.0 < out.top_p <= 1.0:
        raise ValueError(f"rollout: sampling key 'top_p' must be in (0, 1], got {out.top_p}")
    if out.max_new_tokens < 1:
        raise ValueError(f"rollout: sampling key 'max_new_tokens' must be >= 1, got {out.max_new_tokens}")
    return out


class RolloutBackend(BaseWorker, ABC):
    """The rollout role: an inference copy of the policy that samples responses and scores tokens.

    Plain Python (tests build one in-process and call `setup()`); the driver wraps it as a Ray actor.
    `generate` and `logprobs` hold `self.lock` while they run, and every weight load holds it too, so
    generation never sees half-loaded weights; `weights_version` is the version of the weights loaded.
    """

    role = "rollout"

    def __init__(self, cfg: RunConfig, model_path: str, rank: int = 0, world_size: int = 1,
                 num_threads: int = 0) -> None:
        super().__init__(cfg, rank, world_size, num_threads)
        self.model_path = model_path
        self.weights_version = 0
        # Generation waits while weights move; a stuck sync is an error after rollout.sync_timeout_s.
        self.lock = WeightsLock(f"rollout[{rank}]", cfg.rollout.sync_timeout_s)

    def sampling(self, sampling: Mapping[str, Any] | None) -> Sampling:
        """`sampling` checked against `SAMPLING_KEYS`, defaults from this worker's config."""
        return resolve_sampling(sampling, self.cfg)

    def sleep(self) -> None:
        """The trainers compute next: a backend sharing their GPU frees it until its next call (vLLM's sleep mode,
        colocated). Here nothing is held that could be freed."""

    @abstractmethod
    def setup(self) -> None:
        """Load the model and tokenizer (`self.tokenizer`); called once, after `__init__`."""

    @abstractmethod
    def generate(self, prompts: list[str], n: int, sampling: Mapping[str, Any]) -> Generated:
        """Sample `n` responses per prompt, prompt-major (prompt i's samples at i*n .. i*n + n - 1).

        `sampling`: the keys in `SAMPLING_KEYS`, each optional; any other key raises ValueError.
        Each sequence holds its prompt's token ids (the tokenizer's encoding of the prompt), the
        response token ids, the response text (decoded with special tokens skipped) and one logprob
        per response token: log_softmax of the raw logits (temperature 1, no top-p), the same
        convention as the trainer's forward pass, so the rollout/trainer gap compares like with like.
        """

    @abstractmethod
    def update_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        """Load the trainer's full state dict in place (a partial one is an error) and set
        `weights_version = version`; returns it. Generation after it uses the new weights."""

    @abstractmethod
    def logprobs(self, batch: Batch) -> torch.Tensor:
        """[B, L] float32 CPU logprobs of `batch.input_ids` under the current weights (entry t scores
        token t given tokens < t), multiplied by `batch.response_mask` (zero outside responses)."""
