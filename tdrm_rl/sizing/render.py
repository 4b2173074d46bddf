"""The plan as text (`tdrm-rl plan`) and as the markdown tables docs/cluster.md carries."""

from __future__ import annotations

from tdrm_rl.sizing.memory import ALLOCATOR_SLACK, GiB, Usage
from tdrm_rl.sizing.plan import FIT_SHARE, Plan
from tdrm_rl.sizing.search import suggestions

ESTIMATE_NOTE = ("estimates from the model's config.json and the formulas in tdrm_rl/sizing/memory.py, "
                 "not measurements on a GPU")


def gib(n: float) -> str:
    return f"{n / GiB:.1f}"


def plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def params_text(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def layout_line(plan: Plan) -> str:
    cfg = plan.cfg
    rc, pc, qc = cfg.rollout, cfg.policy, cfg.prm
    engines = (f"{plural(rc.num_workers, ('vLLM' if rc.backend == 'vllm' else 'HF') + ' engine')} x TP "
               f"{rc.tensor_parallel_size}")
    roles = f"{engines}, policy ZeRO-{pc.zero_stage} x {pc.world_size}, PRM ZeRO-{qc.zero_stage} x {qc.world_size}"
    kind = "colocated (GPU i holds rank i of every role)" if cfg.cluster.colocate else "separate GPUs per role"
    gpus = f"{plural(len(plan.gpus), 'GPU')} x {plan.gpu_bytes / GiB:g} GiB"
    return f"{gpus}, {kind}: {roles}; weight sync {plan.sync_mode}"


def model_line(plan: Plan) -> str:
    s = plan.policy_shape
    line = (f"{s.name}: {params_text(s.params())} parameters ({s.model_type}, {s.layers} layers, hidden {s.hidden}, "
            f"vocab {s.vocab}{', tied embeddings' if s.tied else ''}); config.json: {s.source}")
    if plan.prm_shape is not s:
        line += f"\nPRM      {plan.prm_shape.name}: config.json: {plan.prm_shape.source}"
    return line


def usage_lines(usage: Usage, ranks: int) -> list[str]:
    more = {1: "", 2: " (rank 1 alike)"}.get(ranks, f" (ranks 1-{ranks - 1} alike)")
    out = [f"{usage.label}{more}"]
    for t in usage.breakdown:
        out.append(f"  {t.name:<22}{gib(t.bytes):>7}  {t.why}")
    for t in usage.resident:
        out.append(f"  {t.name:<22}{gib(t.bytes):>7}  {t.why}")
    if usage.phases:
        peak_phase = usage.peak_phase()
        out.append(f"  one phase at a time (+{ALLOCATOR_SLACK:.0%} allocator slack):")
        for name, terms in usage.phases.items():
            parts = " + ".join(f"{t.name} {gib(t.bytes)}" for t in terms if t.bytes) or "nothing on the GPU"
            mark = "  <- peak" if name == peak_phase else ""
            out.append(f"    {name:<20}{gib(usage.phase_bytes(name)):>7}  {parts}{mark}")
    out.append(f"  {'peak':<22}{gib(usage.peak()):>7}  with {gib(usage.fixed)} GiB "
               + ("its vLLM share" if usage.breakdown else "CUDA context"))
    return out


def plan_text(plan: Plan, recipe: str, search: bool = True) -> str:
    cfg = plan.cfg
    lines = [f"tdrm-rl plan {recipe}: {ESTIMATE_NOTE}", f"model    {model_line(plan)}"]
    if not plan.on_gpu:
        lines.append("layout   CPU (no GPU in cluster.num_gpus_per_worker / cluster.gpus_per_node): nothing to fit; "
                     "train runs no memory check")
        return "\n".join(lines) + "\n"
    lines.append(f"layout   {layout_line(plan)}")
    pc, qc = cfg.policy, cfg.prm
    lines.append(f"tokens   {plan.prompt_tokens} prompt (cluster.plan_prompt_tokens) + {cfg.rollout.max_new_tokens} "
                 f"response (rollout.max_new_tokens) = {plan.seq_tokens} per sequence; a pass holds "
                 f"{pc.micro_batch_size} (policy) / {qc.micro_batch_size} (PRM) sequences (micro_batch_size)")
    lines.append("")
    for role in ("policy", "prm", "rollout"):
        lines += usage_lines(plan.roles[role][0], len(plan.roles[role]))
    if plan.kv_tokens is not None:
        seqs = plan.kv_tokens / plan.seq_tokens
        lines.append(f"  KV cache holds {max(plan.kv_tokens, 0):,.0f} tokens: {max(seqs, 0):.0f} sequences of "
                     f"{plan.seq_tokens} tokens at once")
    lines.append("")
    usable = plan.usable_bytes
    lines.append(f"{'GPU':<8}{'need GiB':>9}  fits in {gib(usable)} GiB ({FIT_SHARE:.0%} of {plan.gpu_bytes / GiB:g})"
                 f"  processes")
    for g in plan.gpus:
        lines.append(f"{g.name:<8}{gib(g.need()):>9}  {'yes' if g.need() <= usable else 'NO':<26}"
                     f"{', '.join(u.label for u in g.usages)}")
    lines.append("")
    lines.append("fits: yes" if plan.fits else "fits: NO\n" + "\n".join(f"  - {p}" for p in plan.problems))
    if search:
        found = suggestions(plan)
        lines.append("largest that fit, one at a time (the rest as the recipe has them): " + ", ".join(
            f"{k}={v}" if v else f"{k}: none fits" for k, v in found.items()))
    return "\n".join(lines) + "\n"


def role_peak(plan: Plan, role: str) -> float:
    return max(u.peak() for u in plan.roles[role])


def recipe_row(plan: Plan, recipe: str) -> str:
    """One row of docs/cluster.md's family recipe table."""
    cfg, s = plan.cfg, plan.policy_shape
    rc = cfg.rollout
    layout = (f"{plural(rc.num_workers, 'engine')} TP{rc.tensor_parallel_size}, policy "
              f"{cfg.policy.world_size} x ZeRO-{cfg.policy.zero_stage}, PRM {cfg.prm.world_size} x "
              f"ZeRO-{cfg.prm.zero_stage}")
    peaks = " / ".join(gib(role_peak(plan, r)) for r in ("policy", "prm", "rollout"))
    longest = suggestions(plan)["rollout.max_new_tokens"]
    return (f"| {s.name} | `{recipe}` | {s.params() / 1e9:.1f}B | {cfg.cluster.num_gpus} | {layout} | "
            f"{rc.max_new_tokens} ({longest or 'none'}) | {peaks} | {'yes' if plan.fits else 'NO'} |")


RECIPE_HEADER = ("| Model | Recipe | Params | GPUs | Layout | Response tokens (largest that fits) | "
                 "Peak GiB per GPU: policy / PRM / engine | Fits |\n|---|---|---|---|---|---|---|---|")


def colocated_row(plan: Plan, recipe: str) -> str:
    """One row of docs/cluster.md's colocated table: the variant's per-GPU need and what would fit."""
    g = max(plan.gpus, key=lambda x: x.need())
    found = suggestions(plan)
    parts = ", ".join(f"{g_.label} {gib(g_.peak())}" for g_ in g.usages)
    fix = ", ".join(f"{k}={v}" for k, v in found.items() if k.endswith("micro_batch_size") and v) or "none"
    return (f"| `{recipe}` | {len(plan.gpus)} | {plan.cfg.rollout.gpu_memory_utilization:g} | {gib(g.need())} "
            f"({parts}) | {'yes' if plan.fits else 'NO'} | {fix} |")


COLOCATED_HEADER = ("| Recipe | GPUs | vLLM share | Need GiB on the fullest GPU | Fits | Largest micro-batch "
                    "that fits |\n|---|---|---|---|---|---|")


