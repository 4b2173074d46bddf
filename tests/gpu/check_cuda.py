"""One prepared device check of the CUDA paths (run on a lent GPU machine; needs neither Ray nor vLLM).

    python tests/gpu/check_cuda.py [--out DIR] [--size 0.5b|1.5b]
    python tests/gpu/check_cuda.py --device cpu --size tiny      # local smoke run of the same code

Sections, each PASS / FAIL / SKIP with timings, written to DIR/gpu_check.json and printed as a table:
  hf_generate_bf16   HF rollout backend in bf16 on a real-size random-weight Qwen2 (tokens/s)
  prm_single_pass    PRM values for every step from one forward pass vs scoring each prefix alone
  deepspeed_policy   PolicyWorker (DeepSpeed ZeRO-2, bf16) update on GPU: loss finite, weights change,
                     then trainer -> HF rollout weight sync and the logprob gap
  deepspeed_prm      PRMWorker TD update on GPU: TD loss finite, weights change
  cuda_ipc           the ipc weight-sync halves: trainer buckets + CUDA IPC handles in this process,
                     rebuilt and unflattened in a spawned process, bytes compared
  nccl_broadcast     needs 2 GPUs (vLLM's PyNccl needs vLLM): SKIP with one GPU

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
import traceback
from typing import Any, Callable

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

SIZES = {  # Qwen2.5 shapes (vocab kept to the char tokenizer so our generate() decodes every id)
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128),
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def save_random_policy(size: str, path: str) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tdrm_rl.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **SIZES[size])
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return tok


def step_batch(tok: Any, rows: int, steps: int, step_tokens: int, seed: int = 0) -> Any:
    """A Batch of random responses with `steps` blank-line-separated steps each, collated like a rollout."""
    from tdrm_rl.data.collate import TokenTexts, collate

    g = torch.Generator().manual_seed(seed)
    digits = [tok.convert_tokens_to_ids(c) for c in "0123456789+-*= "]
    delim = tok("\n\n")["input_ids"]
    prompts, responses = [], []
    for _ in range(rows):
        prompts.append(tok("Start with 3: +4\n")["input_ids"])
        body: list[int] = []
        for s in range(steps):
            body += [digits[int(i)] for i in torch.randint(len(digits), (step_tokens,), generator=g)]
            body += delim if s < steps - 1 else []
        responses.append(body)
    batch = collate(prompts, responses, list(range(rows)), TokenTexts(tok), pad_id=tok.pad_token_id)
    batch.outcome = (torch.rand(rows, generator=g) > 0.5).float()
    batch.advantages = torch.randn(batch.input_ids.shape, generator=g) * batch.response_mask
    batch.rollout_logprobs = torch.zeros(batch.input_ids.shape)
    return batch


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


def check_deepspeed_policy(ctx: dict) -> dict:
    from tdrm_rl.models.load import load_policy
    from tdrm_rl.workers.policy import PolicyWorker
    from tdrm_rl.workers.rollout.hf import RolloutWorker

    cfg, policy = _worker(PolicyWorker, ctx)
    tok = policy.tokenizer
    batch = step_batch(tok, rows=16, steps=4, step_tokens=12)
    before = _params(policy.engine.module)
    sync(ctx["device"])
    t0 = time.perf_counter()
    metrics = policy.update(batch)
    sync(ctx["device"])
    seconds = time.perf_counter() - t0
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
            "engine_dtype": engine_dtype, "logprob_gap_before_sync": gap_before, "logprob_gap_after_sync": gap_after,
            "device": str(policy.device)}


def check_deepspeed_prm(ctx: dict) -> dict:
    from tdrm_rl.workers.prm import PRMWorker

    _, prm = _worker(PRMWorker, ctx, init_from_policy=True)
    batch = step_batch(prm.tokenizer, rows=16, steps=4, step_tokens=12)
    batch.step_logits = prm.values(batch)
    before = _params(prm.engine.module)
    sync(ctx["device"])
    t0 = time.perf_counter()
    metrics = prm.td_update(batch)
    sync(ctx["device"])
    changed = float((_params(prm.engine.module) - before).abs().max())
    loss = metrics["prm/td_loss"]
    return {"ok": loss == loss and changed > 0, "update_seconds": time.perf_counter() - t0, "td_loss": loss,
            "max_weight_change": changed, "values_device_ok": batch.step_logits.device.type == "cpu"}


def _ipc_receiver(plan: Any, handles: Any, uuid: str, queue: Any) -> None:
    from tdrm_rl.workers.rollout.vllm_extension import rebuild_ipc_tensor, unflatten_bucket

    torch.cuda.set_device(0)
    out = {}
    for bucket, handle in zip(plan, handles[uuid]):
        for name, t in unflatten_bucket(rebuild_ipc_tensor(handle, 0), bucket):
            out[name] = (float(t.float().sum()), tuple(t.shape), str(t.dtype))
    queue.put(out)


def check_cuda_ipc(ctx: dict) -> dict:
    if not ctx["device"].startswith("cuda"):
        return {"skip": "needs CUDA"}
    from types import SimpleNamespace

    import torch.multiprocessing as mp

    from tdrm_rl.models.load import load_policy
    from tdrm_rl.workers.weight_sync import WeightSender

    model, _ = load_policy(ctx["policy"])
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
    bad = [n for n, p in model.named_parameters()
           if n not in got or got[n][1] != tuple(p.shape) or got[n][2] != str(p.dtype)
           or abs(got[n][0] - float(p.float().sum())) > 1e-3 * max(1.0, abs(got[n][0]))]
    sender.release_ipc_buffers()
    return {"ok": not bad, "buckets": len(plan), "seconds": seconds, "mismatched": bad[:5]}


def check_nccl(ctx: dict) -> dict:
    if torch.cuda.device_count() < 2:
        return {"skip": "NCCL broadcast into vLLM needs 2 GPUs and vLLM (PyNccl); covered by tests/e2e/test_weight_sync_gpu.py"}
    return {"skip": "run tests/e2e/test_weight_sync_gpu.py on a machine with vLLM and Ray"}


CHECKS: list[tuple[str, Callable[[dict], dict]]] = [
    ("hf_generate_bf16", check_hf_generate), ("prm_single_pass", check_prm_single_pass),
    ("deepspeed_policy", check_deepspeed_policy), ("deepspeed_prm", check_deepspeed_prm),
    ("cuda_ipc", check_cuda_ipc), ("nccl_broadcast", check_nccl),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--out", default=os.environ.get("OUT", os.path.join(ROOT, "runs", "gpu_check")))
    parser.add_argument("--only", default="", help="comma-separated section names")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    on_gpu = args.device.startswith("cuda")
    ctx = {"device": args.device, "dtype": torch.bfloat16 if on_gpu else torch.float32,
           "gen_batch": 32 if on_gpu else 4, "gen_tokens": 256 if on_gpu else 16}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.makedirs(args.out, exist_ok=True)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
                              "torch": torch.__version__, "size": args.size, "checks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ctx["policy"] = os.path.join(tmp, "policy")
        save_random_policy(args.size, ctx["policy"])
        only = set(filter(None, args.only.split(",")))
        for name, fn in CHECKS:
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                result = fn(ctx)
            except ModuleNotFoundError as e:
                result = {"skip": f"missing package: {e.name}"}
            except Exception as e:  # a failed check is reported, the others still run
                result = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            result["wall_s"] = time.perf_counter() - t0
            result["status"] = "SKIP" if "skip" in result else ("PASS" if result.get("ok") else "FAIL")
            report["checks"][name] = result
            print(f"{name:18s} {result['status']:4s} {result['wall_s']:7.1f}s  "
                  + json.dumps({k: v for k, v in result.items() if k not in ("trace", "status", "wall_s")},
                               default=str)[:300], flush=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    return 1 if any(r["status"] == "FAIL" for r in report["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
