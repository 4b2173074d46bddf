"""RolloutWorker: the rollout role on HF transformers `generate` (CPU, or one GPU).

Implements the `RolloutBackend` contract (workers/rollout/base.py): generation through
`tdrm_rl.models.generation.generate` (stop strings by a stopping criterion, then truncation after
the token that completes the first one); `update_weights` loads the state dict in process (the CPU
weight-sync path); `logprobs` is a forward pass under the current weights.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.models.generation import Generated, generate
from tdrm_rl.models.logprobs import token_logprobs
from tdrm_rl.models.load import load_policy
from tdrm_rl.workers.rollout.base import RolloutBackend

__all__ = ["RolloutWorker"]


class RolloutWorker(RolloutBackend):
    def setup(self) -> None:
        self.model, self.tokenizer = load_policy(self.model_path, trust_remote_code=self.cfg.model.trust_remote_code)
        if torch.cuda.is_available():  # the actor was given a GPU: generate there, bf16 unless the recipe says
            dtype = {"auto": torch.bfloat16, "bfloat16": torch.bfloat16, "float16": torch.float16,
                     "float32": torch.float32}[self.cfg.rollout.dtype]
            self.model.to("cuda", dtype=dtype)
        self.model.eval()

    def generate(self, prompts: list[str], n: int, sampling: Mapping[str, Any]) -> Generated:
        s = self.sampling(sampling)
        with self.timed("generate"), self.lock.hold("generate"):
            return generate(self.model, self.tokenizer, prompts, n, temperature=s.temperature, top_p=s.top_p,
                            max_new_tokens=s.max_new_tokens, micro_batch_size=self.cfg.rollout.micro_batch_size,
                            stop_at_eos=s.stop_at_eos, stop=s.stop)

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
