"""GPU memory of one process, term by term, in bytes: numbers in, numbers out (no config, no torch).

A process holds `resident` terms all the time and needs one `phase` on top of them at a time. Its peak is the
resident sum plus its largest phase: torch's caching allocator keeps that peak reserved afterwards (the trainers
call empty_cache only before exporting weights and after an IPC hand-off), so on a shared GPU the other processes
must live beside it. Host memory (vLLM's sleep offload, exported CPU copies) is not sized.

Bytes per token and per logit were measured on CPU, with the project's own code, by what autograd keeps for
backward and by torch.profiler's memory timeline (tests/unit/sizing/test_measured.py re-measures them):
- a decoder layer keeps 6 B per hidden unit per RMSNorm (the fp32 copy and the bf16 output), 8 B per query unit
  and 4 B per key/value unit (projections, rotary copies, attention output), 8 B per MLP unit (gate, SiLU, up,
  product); gradient checkpointing keeps only each layer's 2 B-per-hidden input, then recomputes one layer;
- the policy's LM head runs over `CHUNK_TOKENS`-token chunks (tdrm_rl/models/logprobs.py) and peaks at about
  20 B per chunk logit with a gradient (bf16 head output, fp32 copy, log-sum-exp, softmax and product for the
  entropy, their gradients), 8 B without;
- the PRM's log-prob read-out (tdrm_rl/models/load.py, LogprobValueModel) runs the same chunked head (no entropy):
  also about 20 B per chunk logit with a gradient (the chunk's logits recomputed in backward, then their
  gradients), 8 B without. It took fp32 log-softmax over the whole sequence before: 16 B per logit of EVERY token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tdrm_rl.sizing.shapes import ModelShape

GiB = 1024 ** 3
BF16, FP32 = 2, 4

NORM_BYTES_PER_HIDDEN = 6
ATTENTION_BYTES_PER_Q = 8
ATTENTION_BYTES_PER_KV = 4
MLP_BYTES_PER_UNIT = 8
CHECKPOINT_BYTES_PER_HIDDEN = 2
BACKWARD_BYTES_PER_HIDDEN = 8  # the hidden-state gradient flowing down (fp32 at the head, bf16 residuals)
CHUNK_LOGIT_BYTES_GRAD, CHUNK_LOGIT_BYTES_NOGRAD = 20, 8

# DeepSpeed defaults the project does not override (workers/deepspeed.py deepspeed_config).
REDUCE_BUCKET_ELEMENTS = 500_000_000  # zero_optimization.reduce_bucket_size
PREFETCH_BUCKET_ELEMENTS = 50_000_000  # stage3_prefetch_bucket_size
SUB_GROUP_ELEMENTS = 1_000_000_000  # sub_group_size: ZeRO-3 steps the optimizer one sub-group at a time
ADAM_STATE_BYTES = 12  # fp32 master weights + two fp32 moments, per parameter of the optimizer's partition
STEP_TEMP_BYTES = 8  # the step's fp32 gradient copy + torch AdamW's foreach sqrt buffer, per partition parameter

# vLLM (0.32) at start: it profiles one batch of max_num_batched_tokens (16384 for the LLM class on an 80 GB+
# GPU, 8192 below) and the sampler's fp32 logits for max_num_seqs (1024 / 256) sequences, then captures CUDA
# graphs; what is left of gpu_memory_utilization x GPU memory becomes the KV cache.
VLLM_PROFILE_BYTES_PER_TOKEN_PER_UNIT = (6, 8)  # x intermediate, x hidden (MLP output + residual stream), bf16
VLLM_SAMPLER_BYTES_PER_LOGIT = 12
VLLM_GRAPHS_AND_RUNTIME_BYTES = 1.5 * GiB
CUDA_CONTEXT_BYTES = 1.0 * GiB  # CUDA context, cuBLAS workspace and NCCL buffers of each process on a GPU
# torch's caching allocator reserves about this share above what the varying-size allocations of a phase
# need (fragmentation); the resident states are a few large flat buffers and get none.
ALLOCATOR_SLACK = 0.10


@dataclass(frozen=True)
class Term:
    name: str
    bytes: float
    why: str


@dataclass
class Usage:
    """One process on one GPU: e.g. policy rank 0, or rollout engine 1."""

    label: str
    resident: list[Term] = field(default_factory=list)
    phases: dict[str, list[Term]] = field(default_factory=dict)
    fixed: float = CUDA_CONTEXT_BYTES  # outside torch's caching allocator (a vLLM engine: its whole share)
    breakdown: list[Term] = field(default_factory=list)  # what a fixed share holds (display only)

    def phase_bytes(self, phase: str) -> float:
        return sum(t.bytes for t in self.phases[phase])

    def peak_phase(self) -> str | None:
        return max(self.phases, key=self.phase_bytes) if self.phases else None

    def resident_bytes(self) -> float:
        return sum(t.bytes for t in self.resident)

    def peak(self) -> float:
        """What the process occupies on its GPU at its peak: resident + largest phase (with allocator slack) + fixed."""
        phase = self.peak_phase()
        return self.resident_bytes() + (self.phase_bytes(phase) * (1 + ALLOCATOR_SLACK) if phase else 0.0) + self.fixed


def zero_states(params: int, zero_stage: int, world: int) -> list[Term]:
    """bf16 weights and gradients and the fp32 optimizer state of a DeepSpeed rank (bf16 on; AdamW)."""
    part = params / world
    whole, share = "the whole model", ("the whole model" if world == 1 else f"1/{world} of the model")
    opt_part = part if zero_stage >= 1 else params  # ZeRO-0 in bf16 keeps the fp32 state whole (FP16_Optimizer)
    return [
        Term("weights", BF16 * (part if zero_stage == 3 else params), f"bf16, {share if zero_stage == 3 else whole}"),
        Term("gradients", BF16 * (part if zero_stage >= 2 else params), f"bf16, {share if zero_stage >= 2 else whole}"),
        Term("optimizer", ADAM_STATE_BYTES * opt_part, "fp32 master weights + Adam moments, "
             + (share if zero_stage >= 1 else whole) + f" (ZeRO-{zero_stage})"),
    ]


def zero_buffers(shape: ModelShape, zero_stage: int) -> list[Term]:
    """DeepSpeed's reduce bucket (ZeRO-2/3) and ZeRO-3's gathered-parameter working set."""
    out = []
    if zero_stage >= 2:
        out.append(Term("reduce bucket", BF16 * REDUCE_BUCKET_ELEMENTS, "reduce_bucket_size 5e8 elements, bf16"))
    if zero_stage == 3:
        out.append(Term("gathered params", 2 * BF16 * (shape.largest_tensor() + PREFETCH_BUCKET_ELEMENTS),
                        "ZeRO-3 all-gathers a module (the embeddings at most) plus the prefetch bucket, and its "
                        "full gradient before reduce-scatter"))
    return out


def optimizer_step(params: int, zero_stage: int, world: int) -> list[Term]:
    """The optimizer step's transient buffers (after backward, so not at the same time as activations)."""
    part = params / world if zero_stage >= 1 else params
    if zero_stage == 3:
        part = min(part, SUB_GROUP_ELEMENTS)
    return [Term("step buffers", STEP_TEMP_BYTES * part, "fp32 gradient copy + AdamW foreach temporaries"
                 + (" (one ZeRO-3 sub-group at a time)" if zero_stage == 3 else ""))]


def layer_activation_bytes_per_token(shape: ModelShape) -> float:
    """What autograd keeps for one decoder layer per token (bf16 training, SDPA attention)."""
    return (shape.norms_per_layer * NORM_BYTES_PER_HIDDEN * shape.hidden + ATTENTION_BYTES_PER_Q * shape.q_dim
            + ATTENTION_BYTES_PER_KV * shape.kv_dim + MLP_BYTES_PER_UNIT * shape.intermediate)


def decoder_activations(shape: ModelShape, tokens: int, checkpointing: bool) -> Term:
    """Activations of one forward/backward over `tokens` tokens (one micro-batch, every row at full length)."""
    layer = layer_activation_bytes_per_token(shape)
    final = NORM_BYTES_PER_HIDDEN * shape.hidden + BACKWARD_BYTES_PER_HIDDEN * shape.hidden
    if checkpointing:
        per_token = shape.layers * CHECKPOINT_BYTES_PER_HIDDEN * shape.hidden + layer + final
        why = f"{tokens} tokens: each layer's input kept (gradient checkpointing), one layer recomputed"
    else:
        per_token = shape.layers * layer + final
        why = f"{tokens} tokens x {shape.layers} layers kept for backward (model.gradient_checkpointing=false)"
    return Term("activations", per_token * tokens, why)


def chunked_logits(shape: ModelShape, tokens: int, chunk_tokens: int, grad: bool) -> Term:
    """The LM head (the policy's, and the PRM's logprob read-out): one chunk of [chunk_tokens, vocab] logits alive
    at a time."""
    live = min(tokens, chunk_tokens)
    per = CHUNK_LOGIT_BYTES_GRAD if grad else CHUNK_LOGIT_BYTES_NOGRAD
    return Term("logits", per * live * shape.vocab, f"one {live}-token LM-head chunk x vocab {shape.vocab}, "
                f"{per} B per logit")


def vllm_engine(shape: ModelShape, utilization: float, gpu_bytes: float, tp: int, dtype_bytes: int) -> Usage:
    """One engine's share of one of its GPUs (one TP rank). The engine takes utilization x GPU memory whatever the
    model needs: weights, its profiled activation peak, CUDA graphs; the rest becomes KV cache (`kv_cache_bytes`)."""
    share = utilization * gpu_bytes
    batched_tokens, max_seqs = (16384, 1024) if gpu_bytes >= 70 * GiB else (8192, 256)
    per_unit_i, per_unit_h = VLLM_PROFILE_BYTES_PER_TOKEN_PER_UNIT
    weights = dtype_bytes * shape.params() / tp
    activations = (batched_tokens * (per_unit_i * shape.intermediate / tp + per_unit_h * shape.hidden)
                   + max_seqs * shape.vocab * VLLM_SAMPLER_BYTES_PER_LOGIT)
    kv = share - weights - activations - VLLM_GRAPHS_AND_RUNTIME_BYTES
    kind = "bf16" if dtype_bytes == 2 else "fp32"
    return Usage("engine", fixed=share, breakdown=[
        Term("weights", weights, kind + (f", 1/{tp} of the model (TP)" if tp > 1 else "")),
        Term("profiled activations", activations,
             f"{batched_tokens} batched tokens + fp32 sampler logits of {max_seqs} sequences"),
        Term("CUDA graphs, runtime", VLLM_GRAPHS_AND_RUNTIME_BYTES, "estimate"),
        Term("KV cache", kv, f"the rest of gpu_memory_utilization {utilization:g} x GPU memory, "
             f"{shape.kv_bytes_per_token(dtype_bytes) / tp / 1024:.0f} KiB per token"),
    ])


def kv_cache_bytes(engine: Usage) -> float:
    return next(t.bytes for t in engine.breakdown if t.name == "KV cache")
