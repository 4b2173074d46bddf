"""DeepSpeed plumbing shared by the two trained roles (policy and PRM)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Callable, Iterator, NamedTuple

import torch

from tdrm_rl.data.atomic import atomic_dir
from tdrm_rl.workers.base import BaseWorker


def deepspeed_config(zero_stage: int, micro_batch_size: int, grad_accum: int, grad_clip: float,
                     world_size: int, bf16: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        # The NaN guard's GuardedAdamW is torch AdamW plus a skip flag; DeepSpeed only knows AdamW by exact type.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class GuardedAdamW(torch.optim.AdamW):
    """AdamW that can skip a whole optimizer step: the NaN guard drops an update without touching weights or moments.

    `skipping` holds for the whole of one `engine.step()` (see `DeepSpeedWorker.backward_and_step`), not for one
    call: ZeRO-3 calls `step()` once per optimizer sub-group (`zero_optimization.sub_group_size`, 1e9 partition
    elements by default: several per rank at 7B+), and a one-shot flag skipped only the first of them.
    """

    skipping = False

    def step(self, closure=None):
        if self.skipping:
            return None
        return super().step(closure)


class DeepSpeedWorker(BaseWorker):
    """A role that owns a DeepSpeed engine built around a torch optimizer (no JIT-compiled optimizer)."""

    grad_accum: int = 1
    # Merged into the DeepSpeed config's zero_optimization section (e.g. a small sub_group_size in a test).
    zero_overrides: dict = {}

    def build_engine(self, model: torch.nn.Module, lr: float, weight_decay: float, zero_stage: int,
                     micro_batch_size: int, grad_accum: int, grad_clip: float,
                     lr_scale: "Callable[[str], float] | None" = None):
        """`lr_scale(name)`, when given, multiplies `lr` per parameter (one optimizer group per scale;
        a scale of 0 freezes the parameter)."""
        import deepspeed

        self.grad_accum = grad_accum
        if self.cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if lr_scale is None:
            params = [p for p in model.parameters() if p.requires_grad]
        else:
            groups: dict[float, list] = {}
            for name, p in model.named_parameters():
                scale = float(lr_scale(name))
                if scale == 0.0:
                    p.requires_grad_(False)
                elif p.requires_grad:
                    groups.setdefault(scale, []).append(p)
            params = [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]
        optimizer = GuardedAdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
        self.guarded_optimizer = optimizer
        config = deepspeed_config(zero_stage, micro_batch_size, grad_accum, grad_clip, self.world_size, bf16)
        config["zero_optimization"].update(self.zero_overrides)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        return engine

    @property
    def device(self) -> torch.device:
        """Where DeepSpeed put the model (cuda:LOCAL_RANK on GPU, cpu here); batches move there per chunk."""
        return torch.device(self.engine.device)

    def rows_for_rank(self, num_rows: int) -> list[int]:
        """Data parallel shard: rank r trains rows r, r + W, r + 2W, ..."""
        return rows_for_rank(num_rows, self.rank, self.world_size)

    def accumulation_chunks(self, num_rows: int) -> list["Chunk"]:
        """Exactly `grad_accum` chunks of a mini-batch's rows, so DeepSpeed steps once per mini-batch and every rank
        runs as many forward/backward passes as the others (ZeRO's collectives pair them up). See `split_chunks`."""
        chunks = split_chunks(num_rows, self.grad_accum)
        self.chunk_rows = getattr(self, "chunk_rows", []) + [len(c.rows) if c.real else 0 for c in chunks]
        return chunks

    def pop_chunk_rows(self) -> list[int]:
        """Rows of every accumulation chunk since the last call (0: a stand-in pass); the split tests read it."""
        out, self.chunk_rows = getattr(self, "chunk_rows", []), []
        return out

    def sharded_pass(self, batch: Any, score: "Callable[[Any], torch.Tensor]") -> torch.Tensor:
        """`score(batch)` [B, ...] for a no-grad pass (PRM values, old / reference logprobs), each rank scoring only
        its shard (`rows_for_rank`) and the parts all-gathered back into batch order, so every rank returns the
        whole result. Every rank used to score the whole batch: W times the work (review F18). Under ZeRO-3 every
        rank still runs the whole batch: each forward gathers parameters collectively, so all ranks must run the
        same passes (and the shards' pass counts differ when W does not divide the batch)."""
        if self.world_size == 1 or self.zero3():
            return score(batch)
        mine = score(batch.select(self.rows_for_rank(len(batch))))
        parts: list = [None] * self.world_size
        torch.distributed.all_gather_object(parts, mine.cpu())
        out = parts[0].new_zeros((len(batch), *parts[0].shape[1:]))
        for rank, part in enumerate(parts):
            out[rank::self.world_size] = part
        return out

    def zero3(self) -> bool:
        """ZeRO-3: every rank holds only a partition of each parameter; a full tensor must be gathered first."""
        return bool(getattr(self.engine, "zero_optimization_partition_weights", lambda: False)())

    def iter_full_weights(self, every_rank: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """(state_dict key, full CPU tensor), one module at a time, on rank 0 (on every rank with `every_rank`).

        Under ZeRO-3 each module's own parameters are gathered only while they are copied, so a rank's extra
        memory is the largest module's weights (the embedding), never the whole model at once as one big
        GatheredParameters did (review F6: 19 GB more on every GPU at 9B, beside the optimizer states).
        Every rank must run the whole loop (each gather is a collective); ranks that keep nothing copy nothing.
        Tied weights (one Parameter under two names) come out as one tensor under both names."""
        import deepspeed

        keep = every_rank or self.rank == 0
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the activations' cached blocks make room for the gathers
        copies: dict[int, torch.Tensor] = {}
        for prefix, module in self.engine.module.named_modules():
            params = [(n, p) for n, p in module.named_parameters(recurse=False)]
            buffers = [(n, b) for n, b in module.named_buffers(recurse=False)
                       if n not in module._non_persistent_buffers_set]
            gather = (deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None)
                      if self.zero3() and params else nullcontext())
            with gather:
                if not keep:
                    continue
                for name, tensor in params + buffers:
                    if id(tensor) not in copies:
                        copies[id(tensor)] = tensor.detach().to("cpu", copy=True)
                    yield (f"{prefix}.{name}" if prefix else name), copies[id(tensor)]

    def export_state_dict(self, every_rank: bool = False) -> dict[str, torch.Tensor]:
        """Full weights on CPU, keyed as the module's state_dict: on rank 0, {} on the other ranks (they hold the
        same weights and nobody reads their copy), unless `every_rank` (the multi-rank tests compare ranks).
        Every rank must call it (see `iter_full_weights`)."""
        return dict(self.iter_full_weights(every_rank))

    def save(self, path: str) -> str:
        """HF-format checkpoint (safetensors + tokenizer), written to a temp folder then renamed."""
        state = self.export_state_dict()
        if self.rank != 0:
            return path
        with atomic_dir(path) as tmp:
            self.engine.module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
        return path

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """Accumulate; at the accumulation boundary record the gradient norm, then step.

        NaN guard: when the loss or (ZeRO-0) the gradient of
        the accumulated mini-batch is non-finite, the optimizer skips this step, leaving weights and moments
        untouched (DeepSpeed still counts the step and clears the gradients). `skipped_updates` counts them.
        """
        if not torch.isfinite(loss.detach()).all():
            self._nonfinite = True
        self.engine.backward(loss, scale_wrt_gas=False)  # even when non-finite: DeepSpeed's clipping needs grads
        boundary = self.engine.is_gradient_accumulation_boundary()
        if boundary and self.engine.zero_optimization_stage() == 0:
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            self._grad_norm = (float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
                               if grads else float("nan"))
            if not math.isfinite(self._grad_norm):
                self._nonfinite = True
        if boundary and self.world_size > 1:
            # Ranks see different losses; all must skip together or their weights drift apart.
            flag = torch.tensor([float(getattr(self, "_nonfinite", False))], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self._nonfinite = bool(flag.item())
        skip = boundary and getattr(self, "_nonfinite", False)
        if skip:
            self.skipped_updates = getattr(self, "skipped_updates", 0) + 1
            self._nonfinite = False
        # Every optimizer.step() inside this engine.step() is skipped (ZeRO-3: one per sub-group), then the guard
        # lifts, whatever happens in between.
        self.guarded_optimizer.skipping = skip
        try:
            self.engine.step()
        finally:
            self.guarded_optimizer.skipping = False

    def pop_skipped_updates(self) -> int:
        """Optimizer steps skipped by the NaN guard since the last call."""
        out, self.skipped_updates = getattr(self, "skipped_updates", 0), 0
        return out

    def save_state(self, path: str) -> None:
        """Optimizer, scheduler and engine counters (DeepSpeed's own format, every rank writes its shard)."""
        self.engine.save_checkpoint(path, tag="engine", save_latest=False)

    def load_state(self, path: str) -> None:
        """Weights, optimizer and scheduler states from `save_state` (a tdrm-rl checkpoint)."""
        load_path, _ = self.engine.load_checkpoint(path, tag="engine", load_optimizer_states=True,
                                                   load_lr_scheduler_states=True, load_module_strict=True)
        if load_path is None:
            raise FileNotFoundError(f"{self.role}: no engine state under {path}")

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


def rows_for_rank(num_rows: int, rank: int, world_size: int) -> list[int]:
    """Data parallel shard: rank r takes rows r, r + W, r + 2W, ... (rank 0 gets ceil(num_rows / W) of them)."""
    return list(range(rank, num_rows, world_size))


def accumulation_steps(num_rows: int, world_size: int, mini_batches: int, micro_batch_size: int) -> int:
    """Gradient accumulation steps for a batch of `num_rows` split over `world_size` ranks and `mini_batches`
    optimizer steps: sized for the *largest* shard, so no rank's chunk exceeds `micro_batch_size`.

    Rank 0 holds ceil(num_rows / W) rows (`rows_for_rank`), and its largest mini-batch ceil(that / M) rows
    (`torch.tensor_split`). Sizing from the floor instead (as before) gave rank 0 a chunk of twice the micro-batch
    whenever W does not divide the batch, e.g. 512 rows on 3 ranks at micro 1: 171 rows in 170 chunks.
    """
    largest_shard = math.ceil(num_rows / world_size)
    largest_mini = math.ceil(largest_shard / mini_batches)
    return micro_batches_per_step(largest_mini, micro_batch_size)


class Chunk(NamedTuple):
    """One forward/backward pass of a mini-batch: `rows` index the mini-batch. `real=False` marks a stand-in: a rank
    whose mini-batch has fewer rows than `grad_accum` still runs the pass (on row 0, with its loss weighted by 0),
    because every rank must run the same number of passes (ZeRO-3 gathers parameters in each forward, and DeepSpeed
    steps at the same accumulation boundary on every rank)."""

    rows: torch.Tensor
    real: bool


def split_chunks(num_rows: int, grad_accum: int) -> list[Chunk]:
    """`grad_accum` contiguous chunks of `num_rows` rows, sizes differing by at most one (largest first); a chunk with
    no row becomes a stand-in on row 0. With `grad_accum` from `accumulation_steps`, no chunk exceeds the
    micro-batch on any rank. A batch larger than the one the engine was sized for gets larger chunks, never more
    passes (DeepSpeed's accumulation count is fixed at start)."""
    if num_rows < 1:
        raise ValueError(f"split_chunks: a mini-batch needs at least one row on every rank (got {num_rows}); "
                         f"see the rule on rollout.prompts_per_step x rollout.group_size in tdrm_rl/config/checks.py")
    return [Chunk(rows, True) if len(rows) else Chunk(torch.zeros(1, dtype=torch.long), False)
            for rows in torch.tensor_split(torch.arange(num_rows), grad_accum)]
