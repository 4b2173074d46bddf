"""PolicyWorker: the DeepSpeed policy trainer. Logprobs, the clipped policy-gradient update, weights out.

The frozen reference model (for the KL term) shares this process when `policy.kl_coef > 0`.
"""

from __future__ import annotations

import torch

from tdrm_rl.algos import agg_weight, aggregate_loss, get_policy_loss, kl_penalty, masked_mean
from tdrm_rl.data.batch import Batch
from tdrm_rl.config import RunConfig
from tdrm_rl.models.logprobs import token_logprobs
from tdrm_rl.models.load import load_policy
from tdrm_rl.workers.deepspeed import DeepSpeedWorker, accumulation_steps
from tdrm_rl.workers.weight_sync import WeightSender


class PolicyWorker(WeightSender, DeepSpeedWorker):
    role = "policy"

    def __init__(self, cfg: RunConfig, model_path: str, rank: int = 0, world_size: int = 1,
                 num_threads: int = 0) -> None:
        super().__init__(cfg, rank, world_size, num_threads)
        self.model_path = model_path
        self.reference = None

    def setup(self) -> None:
        pc, rc = self.cfg.policy, self.cfg.rollout
        model, self.tokenizer = load_policy(self.model_path, trust_remote_code=self.cfg.model.trust_remote_code)
        grad_accum = accumulation_steps(rc.prompts_per_step * rc.group_size, self.world_size, pc.mini_batches,
                                        pc.micro_batch_size)
        self.engine = self.build_engine(model, pc.lr, pc.weight_decay, pc.zero_stage, pc.micro_batch_size,
                                        grad_accum, pc.grad_clip)
        self.engine.train()
        if pc.kl_coef > 0:
            self.reference, _ = load_policy(self.model_path, trust_remote_code=self.cfg.model.trust_remote_code)
            self.reference.eval().requires_grad_(False)
            self.reference.to(self.device, dtype=next(self.engine.module.parameters()).dtype)
        self.loss_fn = get_policy_loss("ppo_clip")

    @torch.no_grad()
    def _logprobs(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        parts = [token_logprobs(model, mb.input_ids.to(self.device), mb.attention_mask.to(self.device)).float().cpu()
                 for mb in batch.chunk(self.cfg.policy.micro_batch_size)]
        width = batch.input_ids.shape[1]
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]) * batch.response_mask

    def logprobs(self, batch: Batch) -> torch.Tensor:
        """[B, L] logprobs under the current weights (each rank scores its shard)."""
        with self.timed("old_logprobs"):
            return self.sharded_pass(batch, lambda rows: self._logprobs(self.engine.module, rows))

    def ref_logprobs(self, batch: Batch) -> torch.Tensor:
        """[B, L] logprobs under the frozen reference (each rank scores its shard)."""
        with self.timed("ref_logprobs"):
            return self.sharded_pass(batch, lambda rows: self._logprobs(self.reference, rows))

    def update(self, batch: Batch) -> dict[str, float]:
        """One pass over the batch in `policy.mini_batches` optimizer steps (PPO-clip, token-mean).

        When `old_logprobs` is absent (one optimizer step per batch), the ratio's denominator is the
        detached logprob of this very forward pass: ratio = 1 in value, the gradient is the policy
        gradient. That saves a forward pass on the critical path.
        """
        pc = self.cfg.policy
        with self.timed("policy_update"):
            shard = batch.select(self.rows_for_rank(len(batch)))
            order = torch.randperm(len(shard), generator=torch.Generator().manual_seed(len(shard)))
            sums: dict[str, float] = {}
            count = 0
            gap_sum, gap_tokens = 0.0, 0.0
            for mb_index, mb_rows in enumerate(torch.tensor_split(order, pc.mini_batches)):
                mini = shard.select(mb_rows)
                for rows, real in self.accumulation_chunks(len(mini)):
                    chunk = mini.select(rows).trim().to(self.device)
                    logp, entropy = token_logprobs(self.engine, chunk.input_ids, chunk.attention_mask,
                                                   with_entropy=True, entropy_grad=pc.entropy_coef > 0)
                    mask = chunk.response_mask
                    old = chunk.old_logprobs if chunk.old_logprobs is not None else logp.detach()
                    loss, stats = self.loss_fn(logp, old, chunk.advantages, mask, pc.clip_low, pc.clip_high,
                                               pc.dual_clip, pc.loss_agg)
                    if chunk.ref_logprobs is not None and pc.kl_coef > 0:
                        kl_tokens = kl_penalty(logp, chunk.ref_logprobs, pc.kl_estimator)
                        kl = aggregate_loss(kl_tokens, mask, pc.loss_agg)
                        if pc.kl_mode == "loss":  # with kl_mode=reward it is already in the advantages
                            loss = loss + pc.kl_coef * kl
                        stats["kl"] = kl.detach()
                    if pc.entropy_coef > 0:  # entropy comes from the same forward pass as logp
                        loss = loss - pc.entropy_coef * aggregate_loss(entropy, mask, pc.loss_agg)
                    stats["entropy"] = masked_mean(entropy.detach(), mask)
                    if not real:  # a stand-in pass (this rank has fewer rows than passes): no gradient, no stats
                        self.backward_and_step(loss * 0.0)
                        continue
                    if mb_index == 0 and chunk.rollout_logprobs is not None:
                        gap_sum += float(((logp.detach() - chunk.rollout_logprobs).abs() * mask).sum())
                        gap_tokens += float(mask.sum())
                    weight = agg_weight(mask, mini.response_mask, pc.loss_agg)
                    self.backward_and_step(loss * weight)
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                    count += 1
            metrics = {f"policy/{k}": v / max(count, 1) for k, v in sums.items()}
            metrics["policy/grad_norm"] = self.grad_norm()
            metrics["policy/skipped_updates"] = self.pop_skipped_updates()
            if gap_tokens:
                metrics["policy/rollout_logprob_gap"] = gap_sum / gap_tokens
        metrics.update({f"timing_s/{k}": v for k, v in self.pop_timings().items()})
        return metrics
