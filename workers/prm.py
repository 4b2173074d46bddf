"""PRMWorker: the process reward model (critic). Step values in one forward pass; online TD update.

V(s_t) = sigmoid(head logit at the step-end token of step t). Causal attention makes one forward
pass over the whole trajectory enough for every step.

One forward per step (prm.reuse_values_forward): when the driver says the TD update follows the values pass with
the same weights, the values pass runs with gradients on the update's own chunks and keeps their graphs
(`KeptPass`); the update's first epoch backpropagates through them instead of running its forward again. Where the
kept activations (the whole shard's at once, not one chunk's) would pass prm.reuse_values_max_gib, under ZeRO-3, or
for a model the sizing formulas do not know, the values pass stays a no-grad pass and the update runs its own.
"""

from __future__ import annotations

import copy
import os
import re
from typing import NamedTuple

import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.config import ConfigError, RunConfig
from tdrm_rl.models.load import load_prm, prm_step_logits
from tdrm_rl.models.prm_info import online_objective, write_prm_info
from tdrm_rl.algos.td import ema_update, mean_abs_td_error, prm_td_loss, td_targets
from tdrm_rl.workers.deepspeed import DeepSpeedWorker, accumulation_steps, split_chunks

# The Batch fields a kept pass was computed from: the update reuses it only for the same rows.
_INPUTS = ("input_ids", "attention_mask", "response_mask", "step_ends", "step_mask")


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def frozen_by_layer(name: str, freeze_layers: int) -> bool:
    """Whether prm.freeze_layers fixes this parameter: the token embeddings and decoder layers 0..N-1."""
    if freeze_layers <= 0:
        return False
    layer = _LAYER.search(name)
    return int(layer.group(1)) < freeze_layers if layer else ".embed_tokens." in f".{name}"


def prm_lr_scale(name: str, pc) -> float:
    """prm.lr trains the value head (and the log-prob weight); the backbone gets prm.backbone_lr / prm.lr, except
    what prm.freeze_layers fixes (scale 0: the engine turns its gradient off)."""
    head = name.startswith(("score.", "logprob_scale_raw"))
    if head:
        return 1.0
    if frozen_by_layer(name, pc.freeze_layers):
        return 0.0
    if pc.backbone_lr is None:
        return 1.0
    return pc.backbone_lr / pc.lr if pc.lr > 0 else 0.0


def check_freeze_layers(config, freeze_layers: int) -> None:
    """prm.freeze_layers must leave at least one decoder layer of the PRM's `config` training (else use
    prm.backbone_lr=0)."""
    layers = getattr(config, "num_hidden_layers", None)
    if freeze_layers and layers is not None and freeze_layers >= layers:
        raise ConfigError(f"prm.freeze_layers={freeze_layers}: the PRM has {layers} decoder layers; freeze at most "
                         f"{layers - 1} (prm.backbone_lr=0 freezes the whole backbone)")


class KeptPass(NamedTuple):
    """A values pass kept for the TD update: the step logits of each accumulation chunk (with their graphs), the
    shard they came from and the optimizer step the weights were at."""

    logits: list[torch.Tensor]  # per chunk of split_chunks(len(shard), grad_accum), stand-ins included
    inputs: tuple[torch.Tensor, ...]  # the shard's _INPUTS
    global_step: int

    def matches(self, shard: Batch, global_step: int) -> bool:
        return global_step == self.global_step and all(
            torch.equal(getattr(shard, name), kept) for name, kept in zip(_INPUTS, self.inputs))


def kept_activation_bytes(config: dict, tokens: int, checkpointing: bool, dtype_bytes: int,
                          frozen_layers: int = 0) -> float | None:
    """What autograd keeps for one forward over `tokens` tokens (tdrm_rl/sizing's measured bf16 formula, scaled to
    the parameters' dtype); None for an architecture the formula does not know. Layers below prm.freeze_layers keep
    nothing: no input of theirs needs a gradient, so autograd records them not at all."""
    from dataclasses import replace

    from tdrm_rl.sizing.memory import BF16, decoder_activations
    from tdrm_rl.sizing.shapes import ShapeError, shape_from_config

    try:
        shape = shape_from_config(config, "PRM", "its config")
    except ShapeError:
        return None
    shape = replace(shape, layers=max(shape.layers - frozen_layers, 0))
    return decoder_activations(shape, tokens, checkpointing).bytes * dtype_bytes / BF16


class PRMWorker(DeepSpeedWorker):
    role = "prm"
    kept: KeptPass | None = None

    def __init__(self, cfg: RunConfig, model_path: str, init_from_policy: bool = True, rank: int = 0,
                 world_size: int = 1, num_threads: int = 0, lr_scale: float = 1.0) -> None:
        super().__init__(cfg, rank, world_size, num_threads)
        self.model_path = model_path
        self.lr_scale = lr_scale  # online RL: prm.online_lr_scale
        self.init_from_policy = init_from_policy
        self.target = None

    def setup(self) -> None:
        pc, rc = self.cfg.prm, self.cfg.rollout
        model, self.tokenizer = load_prm(self.model_path, init_from_policy=self.init_from_policy,
                                         trust_remote_code=self.cfg.model.trust_remote_code, readout=pc.readout)
        check_freeze_layers(model.config, pc.freeze_layers)
        grad_accum = accumulation_steps(rc.prompts_per_step * rc.group_size, self.world_size, 1, pc.micro_batch_size)
        self.engine = self.build_engine(model, pc.lr * self.lr_scale, pc.weight_decay, pc.zero_stage,
                                        pc.micro_batch_size, grad_accum, pc.grad_clip,
                                        lr_scale=lambda name: prm_lr_scale(name, pc))
        if pc.bootstrap == "ema":
            self.target = copy.deepcopy(self.engine.module).eval().requires_grad_(False)

    def save(self, path: str, objective: str | None = None) -> str:
        """HF-format checkpoint plus what its values mean (`tdrm_prm.json`): `objective` defaults to the online TD
        updates' (RL checkpoints), so `bon` reads an RL run's PRM with its TD discount."""
        super().save(path)
        if self.rank == 0:
            write_prm_info(path, objective or online_objective(self.cfg), self.cfg)
        return path

    def save_state(self, path: str) -> None:
        """Engine state plus the EMA target (safetensors), if any."""
        super().save_state(path)
        if self.target is not None and self.rank == 0:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self.target.state_dict().items()},
                      os.path.join(path, "ema_target.safetensors"))

    def load_state(self, path: str) -> None:
        self.kept = None  # new weights: a kept pass no longer holds their values
        super().load_state(path)
        if self.target is not None:
            from safetensors.torch import load_file

            self.target.load_state_dict(load_file(os.path.join(path, "ema_target.safetensors")))

    @torch.no_grad()
    def _step_logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        parts = []
        for mb in batch.chunk(self.cfg.prm.micro_batch_size):
            mb = mb.trim()
            mb = mb.to(self.device)
            parts.append(prm_step_logits(model, mb.input_ids, mb.attention_mask, mb.step_ends, mb.step_mask,
                                         mb.response_mask).float().cpu())
        return torch.cat(parts)

    def values(self, batch: Batch, keep_for_update: bool = False) -> torch.Tensor:
        """Step logits [B, S] (sigmoid gives V(s_t)); the driver reads both. Each rank scores its shard.

        `keep_for_update`: the driver's word that `td_update(batch)` comes next with these weights; the pass then
        keeps its graphs for it where they fit (module doc). The logits are the same either way (float tolerance).
        """
        with self.timed("prm_values"):
            self.kept = None  # whatever an earlier pass kept is stale now
            if keep_for_update and not self.zero3():
                # Under ZeRO 0-2 sharded_pass hands each rank exactly the shard its td_update trains on.
                return self.sharded_pass(batch, self._kept_pass)
            self.engine.eval()
            return self.sharded_pass(batch, lambda rows: self._step_logits(self.engine.module, rows))

    def _kept_pass(self, shard: Batch) -> torch.Tensor:
        """The values of `shard` from a forward with gradients on the TD update's chunks, kept in `self.kept`; a
        no-grad pass instead when the kept activations would pass prm.reuse_values_max_gib."""
        chunks = split_chunks(len(shard), self.grad_accum)
        parts = [shard.select(c.rows).trim() for c in chunks]
        tokens = sum(p.attention_mask.numel() for p in parts)
        model = self.engine.module
        need = kept_activation_bytes(model.config.to_dict(), tokens, self.cfg.model.gradient_checkpointing,
                                     next(model.parameters()).element_size(), self.cfg.prm.freeze_layers)
        if need is None or need > self.cfg.prm.reuse_values_max_gib * 1024 ** 3:
            self.engine.eval()
            return self._step_logits(model, shard)
        self.engine.train()  # as in _fit (dropout is 0 either way; gradient checkpointing applies in train mode)
        logits, out = [], []
        for chunk, part in zip(chunks, parts):
            mb = part.to(self.device)
            kept = prm_step_logits(self.engine, mb.input_ids, mb.attention_mask, mb.step_ends, mb.step_mask,
                                   mb.response_mask)
            logits.append(kept)
            if chunk.real:
                out.append(kept.detach().float().cpu())
        self.kept = KeptPass(logits, tuple(getattr(shard, n) for n in _INPUTS), self.engine.global_steps)
        return torch.cat(out)

    def td_update(self, batch: Batch) -> dict[str, float]:
        """Semi-gradient TD: targets from the pre-update values (online) or the EMA copy, then BCE.

        `batch.step_logits` must hold this network's pre-update logits (the driver's PRM-values stage),
        so the online bootstrap costs no extra forward pass.
        """
        pc = self.cfg.prm
        with self.timed("prm_update"):
            shard = batch.select(self.rows_for_rank(len(batch)))
            kept, self.kept = self.kept, None
            if kept is not None and not kept.matches(shard, self.engine.global_steps):
                kept = None  # another batch, or the weights moved since: the update runs its own forward
            if self.target is not None:
                bootstrap = self._step_logits(self.target, shard)
            else:
                bootstrap = shard.step_logits
            targets = td_targets(pc, bootstrap, shard)
            metrics = {"prm/td_error": float(mean_abs_td_error(torch.sigmoid(shard.step_logits), targets,
                                                              shard.step_mask)),
                       "prm/target_mean": float((targets * shard.step_mask).sum() / shard.step_mask.sum().clamp(min=1))}
            metrics["prm/td_loss"] = self._fit(shard, targets, shard.step_mask, pc.terminal_weight,
                                               kept.logits if kept is not None else None)
            metrics["prm/grad_norm"] = self.grad_norm()
            metrics["prm/skipped_updates"] = self.pop_skipped_updates()
            metrics["prm/reused_values_forward"] = float(kept is not None)
        metrics.update({f"timing_s/{k}": v for k, v in self.pop_timings().items()})
        return metrics

    def label_update(self, batch: Batch, labels: torch.Tensor, label_mask: torch.Tensor,
                     terminal_weight: float | None = None) -> dict[str, float]:
        """Supervised BCE on given step labels (ScalarPRM: Monte-Carlo labels; ORM: the outcome at the
        final state only). The same loss and optimizer loop as `td_update`, only the targets differ.

        labels [B, S] in [0, 1]; label_mask [B, S]: the steps that carry a label (a subset of step_mask).
        """
        if labels.shape != batch.step_mask.shape or label_mask.shape != batch.step_mask.shape:
            raise ValueError(f"label_update: labels {tuple(labels.shape)} / label_mask {tuple(label_mask.shape)} "
                             f"must match step_mask {tuple(batch.step_mask.shape)}")
        pc = self.cfg.prm
        self.kept = None  # this update trains: no later td_update may reuse an earlier pass
        with self.timed("prm_update"):
            rows = self.rows_for_rank(len(batch))
            shard = batch.select(rows)
            idx = torch.as_tensor(rows, dtype=torch.long)
            labels, label_mask = labels.index_select(0, idx).float(), label_mask.index_select(0, idx).float()
            weight = pc.terminal_weight if terminal_weight is None else terminal_weight
            metrics = {"prm/label_mean": float((labels * label_mask).sum() / label_mask.sum().clamp(min=1)),
                       "prm/label_loss": self._fit(shard, labels, label_mask, weight)}
            metrics["prm/grad_norm"] = self.grad_norm()
        metrics.update({f"timing_s/{k}": v for k, v in self.pop_timings().items()})
        return metrics

    def _fit(self, shard: Batch, targets: torch.Tensor, loss_mask: torch.Tensor, terminal_weight: float,
             kept: list[torch.Tensor] | None = None) -> float:
        """`prm.epochs` passes of weighted BCE towards `targets` on the steps in `loss_mask`, one optimizer
        step per pass (gradient accumulation over micro-batches); EMA target refreshed after each pass.
        `kept`: the first pass's step logits per chunk, graphs attached (a kept values pass): no forward for them."""
        pc = self.cfg.prm
        self.engine.train()
        total_steps = loss_mask.sum().clamp(min=1.0)
        losses = []
        for epoch in range(pc.epochs):
            for k, (rows, real) in enumerate(self.accumulation_chunks(len(shard))):
                chunk = shard.select(rows)
                chunk_targets = targets.index_select(0, rows)
                chunk_mask = loss_mask.index_select(0, rows)
                chunk = chunk.trim().to(self.device)
                chunk_targets, chunk_mask = chunk_targets.to(self.device), chunk_mask.to(self.device)
                if epoch == 0 and kept is not None:
                    logits, kept[k] = kept[k], None  # the graph goes with its backward
                else:
                    logits = prm_step_logits(self.engine, chunk.input_ids, chunk.attention_mask, chunk.step_ends,
                                             chunk.step_mask, chunk.response_mask)
                loss = prm_td_loss(logits, chunk_targets, chunk_mask, terminal_weight)
                weight = chunk_mask.sum() / total_steps if real else 0.0  # a stand-in pass: no gradient
                self.backward_and_step(loss * weight)
                losses.append(float(loss.detach()) * float(weight))
            if self.target is not None:
                ema_update(self.target.parameters(), self.engine.module.parameters(), pc.ema_decay)
        return sum(losses) / pc.epochs
