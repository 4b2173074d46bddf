"""One prepared device check of the CUDA paths that need torch only (no Ray, no vLLM): run on a lent GPU machine.

    python tests/gpu/check_cuda.py [--out DIR] [--size 0.5b|1.5b]
    python tests/gpu/check_cuda.py --device cpu --size tiny      # local smoke run of the same code

tests/gpu/check_vllm.py runs these sections too, then the vLLM ones, and writes reports/gpu_check.md.
The models are random-weight Qwen2.5 shapes with the full 151,936 vocabulary and tied embeddings (tests/gpu/models.py).
Sections, each PASS / FAIL / SKIP with timings, written to DIR/gpu_check.json and printed as a table:
  hf_generate_bf16   HF rollout backend in bf16 (tokens/s)
  prm_single_pass    PRM values for every step from one forward pass vs scoring each prefix alone
  logprob_memory     peak CUDA memory of the policy's logprobs + entropy + backward at a recipe's micro-batch:
                     the chunked LM head (tdrm_rl/models/logprobs.py) vs full float32 logits (as before the fix)
  deepspeed_policy   PolicyWorker (DeepSpeed ZeRO-2, bf16) update: loss finite, weights change, peak memory;
                     then trainer -> HF rollout weight sync and the logprob gap
  deepspeed_prm      PRMWorker TD update: TD loss finite, weights change, peak memory
  cuda_ipc           the ipc weight-sync halves for an untied and a tied model: trainer buckets + CUDA IPC
                     handles here, rebuilt and unflattened in a spawned process, every tensor compared

Packages: torch and transformers; the DeepSpeed sections also need deepspeed, omegaconf and pyyaml.
Where the machine has none of them, install them beside the repo first (pure-Python wheels):
    pip install --target .gpu-deps --no-deps omegaconf antlr4-python3-runtime==4.9.3 pyyaml deepspeed \
        hjson py-cpuinfo ninja msgpack pydantic pydantic-core annotated-types typing-inspection
and run with PYTHONPATH=.:.gpu-deps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import torch  # noqa: E402

from tests.gpu.models import ROOT, environment, gib, run_checks, save_random_policy, step_batch, sync  # noqa: E402


def check_hf_generate(ctx: dict) -> dict:
    from tdrm_rl.models.generation import generate
    from tdrm_rl.models.load import load_policy

    model, tok = load_policy(ctx["policy"])
    model.to(ctx["device"], dtype=ctx["dtype"]).eval()
    prompts = ["Start with 3: +4\n"] * ctx["gen_batch"]
    generate(model, tok, prompts[:2], 1, temperature=1.0, max_new_tokens=8, stop_at_eos=False)  # warm-up
    sync(ctx["device"])
    t0 = time.perf_counter()
    out = generate(model, tok, prompts, 1, temperature=1.0, max_new_tokens=ctx["gen_tokens"], stop_at_eos=False)
    sync(ctx["device"])
    seconds = time.perf_counter() - t0
    tokens = sum(len(r) for r in out.response_ids)
    finite = all(all(lp == lp and lp <= 0 for lp in row) for row in out.response_logprobs)
    return {"ok": tokens == ctx["gen_batch"] * ctx["gen_tokens"] and finite, "tokens": tokens,
            "seconds": seconds, "tokens_per_s": tokens / seconds, "dtype": str(ctx["dtype"])}


def check_prm_single_pass(ctx: dict) -> dict:
    from tdrm_rl.models.load import load_prm, prm_prefix_step_logits, prm_step_logits

    prm, tok = load_prm(ctx["policy"], init_from_policy=True)
    out = {}
    for dtype in (torch.float32, ctx["dtype"]):
        prm.to(ctx["device"], dtype=dtype).eval()
        batch = step_batch(tok, rows=8, steps=8, step_tokens=12).to(ctx["device"])
        args = (batch.input_ids, batch.attention_mask, batch.step_ends, batch.step_mask)
        with torch.no_grad():
            prm_step_logits(prm, *args)
            sync(ctx["device"])
            t0 = time.perf_counter()
            single = prm_step_logits(prm, *args).float()
            sync(ctx["device"])
            t1 = time.perf_counter()
            prefix = prm_prefix_step_logits(prm, *args).float()
            sync(ctx["device"])
            t2 = time.perf_counter()
        diff = float((torch.sigmoid(single) - torch.sigmoid(prefix)).abs().max())
        out[str(dtype)] = {"max_value_diff": diff, "speedup": (t2 - t1) / max(t1 - t0, 1e-9)}
    # fp32 must match to 1e-5 in values; bf16 only roughly (its own rounding per pass)
    out["ok"] = out["torch.float32"]["max_value_diff"] <= 1e-5 and out[str(ctx["dtype"])]["max_value_diff"] < 5e-2
    return out


def _worker(cls: Any, ctx: dict, **kwargs: Any) -> Any:
    from tdrm_rl.config import load_config
    from tdrm_rl.workers.base import free_port

    cfg = load_config(os.path.join(ROOT, "recipes", "grpo_tdrm.yaml"),
                      ["policy.zero_stage=2", "prm.zero_stage=2", "policy.micro_batch_size=8",
                       "prm.micro_batch_size=8", "rollout.prompts_per_step=4", "rollout.group_size=4",
                       "policy.lr=1e-4", "prm.lr=1e-4"])
    worker = cls(cfg, ctx["policy"], **kwargs)
    worker.setup_distributed("127.0.0.1", free_port())
    worker.setup()
    return cfg, worker


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in module.parameters()])


def full_logits_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The computation before the chunked LM head: [B, L, vocab] float32 logits, log_softmax and an entropy whose
    graph is kept through backward (what review F3 measured at 18-20 bytes per token x vocab entry)."""
    import torch.nn.functional as F

    from tdrm_rl.models.load import position_ids_from_mask
    from tdrm_rl.models.packing import forward_logits

    logits = forward_logits(model, ids, mask, position_ids_from_mask(mask))[:, :-1].float()
    logp = F.log_softmax(logits, dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def check_logprob_memory(ctx: dict) -> dict:
    if not ctx["device"].startswith("cuda"):
        return {"skip": "needs CUDA (the CPU numbers are in make bench: reports/bench.md)"}
    from tdrm_rl.models.load import load_policy
    from tdrm_rl.models.logprobs import token_logprobs

    model, _ = load_policy(ctx["policy"])
    model.to("cuda", dtype=torch.bfloat16).train()
    rows, length = ctx["logit_rows"], ctx["logit_tokens"]
    ids = torch.randint(0, model.config.vocab_size, (rows, length), device="cuda")
    mask = torch.ones_like(ids)
    out: dict[str, Any] = {"rows": rows, "tokens": length, "vocab": model.config.vocab_size}
    for name, fn in (("chunked", lambda: token_logprobs(model, ids, mask, with_entropy=True)),
                     ("full_logits", lambda: full_logits_logprobs(model, ids, mask))):
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        try:
            logp, _ = fn()
            logp.sum().backward()
            sync("cuda")
            out[f"{name}_peak_gib"] = gib(torch.cuda.max_memory_allocated() - base)
        except torch.cuda.OutOfMemoryError:
            out[f"{name}_peak_gib"] = "OOM"
        logp = None
    chunked, full = out["chunked_peak_gib"], out["full_logits_peak_gib"]
    out["full_over_chunked"] = round(full / chunked, 2) if isinstance(full, float) and chunked != "OOM" else full
    out["ok"] = chunked != "OOM" and (full == "OOM" or chunked < full)
    return out


def check_deepspeed_policy(ctx: dict) -> dict:
    from tdrm_rl.workers.policy import PolicyWorker
    from tdrm_rl.workers.rollout.hf import RolloutWorker

    cfg, policy = _worker(PolicyWorker, ctx)
    batch = step_batch(policy.tokenizer, rows=16, steps=ctx["train_steps"], step_tokens=ctx["step_tokens"])
    before = _params(policy.engine.module)
    peak = PeakMemory(ctx["device"])
    t0 = time.perf_counter()
    metrics = policy.update(batch)
    sync(ctx["device"])
    seconds = time.perf_counter() - t0
    memory = peak.read()
    changed = float((_params(policy.engine.module) - before).abs().max())
    rollout = RolloutWorker(cfg, ctx["policy"])
    rollout.setup()
    stale = rollout.logprobs(batch)
    rollout.update_weights(policy.export_state_dict(), 1)
    fresh = rollout.logprobs(batch)
    trainer = policy.logprobs(batch)
    mask = batch.response_mask.bool()
    gap_after = float((fresh - trainer).abs()[mask].max())
    gap_before = float((stale - trainer).abs()[mask].max())
    engine_dtype = str(next(policy.engine.module.parameters()).dtype)
    ok = (metrics["policy/loss"] == metrics["policy/loss"] and changed > 0 and gap_after < gap_before
          and gap_after < (1e-4 if ctx["dtype"] == torch.float32 else 0.1))
    return {"ok": ok, "update_seconds": seconds, "max_weight_change": changed, "loss": metrics["policy/loss"],
            "tokens_per_row": batch.input_ids.shape[1], "micro_batch": cfg.policy.micro_batch_size, **memory,
            "engine_dtype": engine_dtype, "logprob_gap_before_sync": gap_before, "logprob_gap_after_sync": gap_after,
            "device": str(policy.device)}


def check_deepspeed_prm(ctx: dict) -> dict:
    from tdrm_rl.workers.prm import PRMWorker

    _, prm = _worker(PRMWorker, ctx, init_from_policy=True)
    batch = step_batch(prm.tokenizer, rows=16, steps=ctx["train_steps"], step_tokens=ctx["step_tokens"])
    batch.step_logits = prm.values(batch)
    before = _params(prm.engine.module)
    peak = PeakMemory(ctx["device"])
    t0 = time.perf_counter()
    metrics = prm.td_update(batch)
    sync(ctx["device"])
    memory = peak.read()
    changed = float((_params(prm.engine.module) - before).abs().max())
    loss = metrics["prm/td_loss"]
    return {"ok": loss == loss and changed > 0, "update_seconds": time.perf_counter() - t0, "td_loss": loss,
            "max_weight_change": changed, **memory, "values_device_ok": batch.step_logits.device.type == "cpu"}


class PeakMemory:
    """CUDA memory of one call: what was allocated before it (weights, states) and the peak during it."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        if self.cuda:
            sync(device)
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()

    def read(self) -> dict[str, float]:
        if not self.cuda:
            return {}
        sync("cuda")
        return {"allocated_before_gib": gib(self.before), "peak_gib": gib(torch.cuda.max_memory_allocated()),
                "allocated_after_gib": gib(torch.cuda.memory_allocated())}


def _ipc_receiver(plan: Any, handles: Any, uuid: str, queue: Any) -> None:
    from tdrm_rl.workers.rollout.vllm_extension import rebuild_ipc_tensor, unflatten_bucket

    torch.cuda.set_device(0)
    out = {}
    for bucket, handle in zip(plan, handles[uuid]):
        for name, t in unflatten_bucket(rebuild_ipc_tensor(handle, 0), bucket):
            out[name] = (float(t.float().sum()), tuple(t.shape), str(t.dtype))
    torch.cuda.ipc_collect()
    queue.put(out)


def _ipc_handoff(path: str) -> dict:
    """The trainer's half of the ipc path in this process, vLLM's half (rebuild + unflatten) in a spawned one."""
    from types import SimpleNamespace

    import torch.multiprocessing as mp

    from tdrm_rl.models.load import load_policy
    from tdrm_rl.workers.weight_sync import WeightSender

    model, _ = load_policy(path)
    model.to("cuda", dtype=torch.bfloat16)
    sender = WeightSender()
    sender.engine, sender.rank = SimpleNamespace(module=model), 0
    plan = sender.weight_plan(bucket_bytes=16 << 20)
    t0 = time.perf_counter()
    handles = sender.ipc_weight_handles(plan)
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    spawn = mp.get_context("spawn")
    queue = spawn.Queue()
    proc = spawn.Process(target=_ipc_receiver, args=(plan, handles, uuid, queue))
    proc.start()
    got = queue.get(timeout=300)
    proc.join(timeout=60)
    seconds = time.perf_counter() - t0
    params = dict(model.named_parameters())  # a tied lm_head is the embedding's Parameter: listed once
    bad = [n for n, p in params.items()
           if n not in got or got[n][1] != tuple(p.shape) or got[n][2] != str(p.dtype)
           or abs(got[n][0] - float(p.float().sum())) > 1e-3 * max(1.0, abs(got[n][0]))]
    sender.release_ipc_buffers()
    tied = model.config.tie_word_embeddings
    # Tied: the plan carries the embedding once and no lm_head (vLLM's loader ties it back, skipping lm_head).
    tie_ok = (not tied or ("lm_head.weight" not in got and model.lm_head.weight is model.model.embed_tokens.weight))
    return {"ok": not bad and tie_ok and set(got) == set(params), "tied": tied, "buckets": len(plan),
            "tensors": len(got), "seconds": seconds, "mismatched": bad[:5]}


def check_cuda_ipc(ctx: dict) -> dict:
    if not ctx["device"].startswith("cuda"):
        return {"skip": "needs CUDA"}
    out = {}
    for tied in (False, True):
        path = os.path.join(ctx["tmp"], f"ipc-{'tied' if tied else 'untied'}")
        save_random_policy(ctx["size"], path, tied=tied)
        out["tied" if tied else "untied"] = _ipc_handoff(path)
    out["ok"] = all(r["ok"] for r in out.values())
    return out


CHECKS: list[tuple[str, Callable[[dict], dict]]] = [
    ("hf_generate_bf16", check_hf_generate), ("prm_single_pass", check_prm_single_pass),
    ("logprob_memory", check_logprob_memory), ("deepspeed_policy", check_deepspeed_policy),
    ("deepspeed_prm", check_deepspeed_prm), ("cuda_ipc", check_cuda_ipc),
]


def make_context(device: str, size: str, tmp: str) -> dict:
    """What every section reads: the device, the sizes of its work, the random policy saved under `tmp`."""
    on_gpu = device.startswith("cuda")
    ctx = {"device": device, "size": size, "tmp": tmp, "dtype": torch.bfloat16 if on_gpu else torch.float32,
           "gen_batch": 32 if on_gpu else 4, "gen_tokens": 256 if on_gpu else 16,
           # Trainer batches of ~1,100 tokens a row on GPU (the qwen2.5 recipes' 1,280), a few dozen on CPU.
           "train_steps": 16 if on_gpu else 4, "step_tokens": 64 if on_gpu else 12,
           # logprob_memory: 8 x 1,280 tokens, the qwen2.5-1.5B recipe's micro-batch at full length
           "logit_rows": 8, "logit_tokens": 1280, "policy": os.path.join(tmp, "policy")}
    save_random_policy(size, ctx["policy"])
    return ctx


def parse_args(argv: list[str] | None, doc: str) -> argparse.Namespace:
    from tests.gpu.models import SIZES

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--out", default=os.environ.get("OUT", os.path.join(ROOT, "runs", "gpu_check")))
    parser.add_argument("--only", default="", help="comma-separated section names")
    parser.add_argument("--report", default=None, help="check_vllm.py: the markdown report (default: "
                        "$OUT/gpu_check.md when OUT is set, else reports/gpu_check.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__)
    torch.set_flush_denormal(True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.makedirs(args.out, exist_ok=True)
    report: dict[str, Any] = {**environment(), "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = make_context(args.device, args.size, tmp)
        report["checks"] = run_checks(CHECKS, ctx, set(filter(None, args.only.split(","))))
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    return 1 if any(r["status"] == "FAIL" for r in report["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
