"""The Ray actor roles, one class per role; installed as `tdrm_rl.workers`.

    rollout/hf.py, rollout/vllm_engine.py   RolloutWorker backends (HF generate, vLLM)
    policy.py                               PolicyWorker: DeepSpeed policy (and reference) trainer
    prm.py                                  PRMWorker: DeepSpeed PRM critic, step values and TD updates
    deepspeed.py                            the DeepSpeed role base both trainers share
    group.py, placement.py                  WorkerGroup (Ray actors of one role) and placement groups
    weight_sync.py                          trainer -> rollout weight hand-off
"""
