"""RolloutWorker: holds an inference copy of the policy and samples responses.

Backend interface (the vLLM backend implements the same methods):
    generate(prompts, n, sampling) -> Generated (token ids, text, per-token logprobs)
        sampling keys: temperature, top_p, max_new_tokens, stop (list of stop strings; the
        response ends after the first one and keeps it, like vLLM's include_stop_str_in_output)
    update_weights(state_dict)      -> loads trainer weights in place
    logprobs(batch)                 -> [B, L] per-token logprobs under the current weights
"""

from __future__ import annotations

import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.config import RunConfig
from tdrm_rl.models.generation import Generated, generate
from tdrm_rl.models.logprobs import token_logprobs
from tdrm_rl.models.load import load_policy
from tdrm_rl.workers.base import BaseWorker
from tdrm_rl.workers.weight_sync import WeightsLock


class RolloutWorker(BaseWorker):
    role = "rollout"

    def __init__(self, cfg: RunConfig, model_path: str, rank: int = 0, world_size: int = 1,
                 num_threads: int = 0) -> None:
        super().__init__(cfg, rank, world_size, num_threads)
        self.model_path = model_path
        self.weights_version = 0
        self.lock = WeightsLock(f"rollout[{rank}]", cfg.rollout.sync_timeout_s)  # generation waits while weights move

    def setup(self) -> None:
        self.model, self.tokenizer = load_policy(self.model_path, trust_remote_code=self.cfg.model.trust_remote_code)
        if torch.cuda.is_available():  # the actor was given a GPU: generate there, bf16 unless the recipe says
            dtype = {"auto": torch.bfloat16, "bfloat16": torch.bfloat16, "float16": torch.float16,
                     "float32": torch.float32}[self.cfg.rollout.dtype]
            self.model.to("cuda", dtype=dtype)
        self.model.eval()

    def generate(self, prompts: list[str], n: int, sampling: dict) -> Generated:
        """Sample `n` responses per prompt. `sampling`: temperature, top_p, max_new_tokens, stop_at_eos, and
        `stop` (a list of strings; a response ends right after the first one it generates, string included)."""
        with self.timed("generate"), self.lock.hold("generate"):
            return generate(self.model, self.tokenizer, prompts, n,
                            temperature=sampling.get("temperature", self.cfg.rollout.temperature),
                            top_p=sampling.get("top_p", self.cfg.rollout.top_p),
                            max_new_tokens=sampling.get("max_new_tokens", self.cfg.rollout.max_new_tokens),
                            micro_batch_size=self.cfg.rollout.micro_batch_size,
                            stop_at_eos=sampling.get("stop_at_eos", True),
                            stop=tuple(sampling.get("stop") or ()))

    def update_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        """In-process load of the trainer's weights (CPU path); rejects a partial state dict."""
        with self.timed("load_weights"), self.lock.hold("update_weights"):
            missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
            if missing or unexpected:
                raise ValueError(f"rollout: weight sync mismatch, missing={missing[:5]} unexpected={unexpected[:5]}")
            self.weights_version = version
        return self.weights_version

    @torch.no_grad()
    def logprobs(self, batch: Batch) -> torch.Tensor:
        with self.lock.hold("logprobs"):
            device = next(self.model.parameters()).device
            logp = token_logprobs(self.model, batch.input_ids.to(device), batch.attention_mask.to(device))
            return logp.float().cpu() * batch.response_mask


def rollout_worker_class(backend: str) -> type:
    """The rollout role's class for `rollout.backend` (vllm is imported only inside its actor)."""
    if backend == "vllm":
        from tdrm_rl.workers.rollout.vllm_engine import VLLMRolloutWorker

        return VLLMRolloutWorker
    return RolloutWorker
