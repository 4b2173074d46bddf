"""DeepSpeed plumbing shared by the two trained roles (policy and PRM)."""

from __future__ import annotations

import math
import os
import shutil

import torch

from workers.base import BaseWorker


def deepspeed_config(zero_stage: int, micro_batch_size: int, grad_accum: int, grad_clip: float,
                     world_size: int, bf16: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedWorker(BaseWorker):
    """A role that owns a DeepSpeed engine built around a torch optimizer (no JIT-compiled optimizer)."""

    grad_accum: int = 1

    def build_engine(self, model: torch.nn.Module, lr: float, weight_decay: float, zero_stage: int,
                     micro_batch_size: int, grad_accum: int, grad_clip: float):
        import deepspeed

        self.grad_accum = grad_accum
        if self.cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
        config = deepspeed_config(zero_stage, micro_batch_size, grad_accum, grad_clip, self.world_size, bf16)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        return engine

    def rows_for_rank(self, num_rows: int) -> list[int]:
        """Data parallel shard: rank r trains rows r, r + W, r + 2W, ..."""
        return list(range(self.rank, num_rows, self.world_size))

    def accumulation_chunks(self, num_rows: int) -> list[torch.Tensor]:
        """Exactly `grad_accum` index chunks, so DeepSpeed steps once per mini-batch."""
        return [c for c in torch.tensor_split(torch.arange(num_rows), self.grad_accum)]

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights on CPU (gathered under ZeRO-3); every rank must call it, rank 0's copy is used."""
        module = self.engine.module
        if getattr(self.engine, "zero_optimization_partition_weights", lambda: False)():
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def save(self, path: str) -> str:
        """HF-format checkpoint (safetensors + tokenizer), written to a temp folder then renamed."""
        state = self.export_state_dict()
        if self.rank != 0:
            return path
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.engine.module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return path

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """Accumulate; at the accumulation boundary record the gradient norm, then step."""
        self.engine.backward(loss, scale_wrt_gas=False)
        if self.engine.is_gradient_accumulation_boundary() and self.engine.zero_optimization_stage() == 0:
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            self._grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        self.engine.step()

    def grad_norm(self) -> float:
        """Pre-clip global gradient norm of the last optimizer step."""
        if self.engine.zero_optimization_stage() == 0:
            return getattr(self, "_grad_norm", float("nan"))
        norm = self.engine.get_global_grad_norm()
        if norm is None:
            return float("nan")
        return float(norm.item() if torch.is_tensor(norm) else norm)


def micro_batches_per_step(num_rows: int, micro_batch_size: int) -> int:
    return max(1, math.ceil(num_rows / micro_batch_size))
