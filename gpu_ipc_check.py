"""Device check of the ipc weight path's two halves (no vLLM/Ray needed): trainer-side buckets + handles
(WeightSender) in one process, rebuild + unflatten (vllm_extension helpers) in another, compare bytes."""
import sys, os, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import torch.multiprocessing as mp


def receiver(plan, handles, uuid, q):
    from workers.vllm_extension import rebuild_ipc_tensor, unflatten_bucket
    torch.cuda.set_device(0)
    out = {}
    for bucket, h in zip(plan, handles[uuid]):
        for name, t in unflatten_bucket(rebuild_ipc_tensor(h, 0), bucket):
            out[name] = t.float().sum().item(), t.float().abs().max().item(), tuple(t.shape), str(t.dtype)
    q.put(out)


def main():
    from types import SimpleNamespace
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from workers.weight_sync import WeightSender
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=512, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=512, tie_word_embeddings=False))
    model = model.to("cuda", torch.bfloat16)
    sender = WeightSender()
    sender.engine = SimpleNamespace(module=model)
    sender.rank = 0
    plan = sender.weight_plan(bucket_bytes=1 << 20)
    t = time.time()
    handles = sender.ipc_weight_handles(plan)
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    assert list(handles) == [uuid], handles.keys()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=receiver, args=(plan, handles, uuid, q))
    p.start()
    got = q.get(timeout=120)
    p.join(timeout=60)
    print(f"buckets={len(plan)} params={sum(len(b) for b in plan)} handles+rebuild {time.time()-t:.2f}s")
    bad = []
    for name, prm in model.named_parameters():
        s, m, shape, dt = got[name]
        if shape != tuple(prm.shape) or dt != str(prm.dtype) or abs(s - prm.float().sum().item()) > 1e-3 * max(1, abs(s)) or m != prm.float().abs().max().item():
            bad.append(name)
    sender.release_ipc_buffers()
    print("IPC CHECK", "PASS" if not bad and len(got) == len(list(model.parameters())) else f"FAIL {bad[:5]}")


if __name__ == "__main__":
    main()
