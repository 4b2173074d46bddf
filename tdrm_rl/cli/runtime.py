"""The process environment of a run, in one place: defaults, the Ray connection, what actors inherit.

Imported by the CLI, the paper reproduction, the worker groups, the benchmarks and the tests.
"""

from __future__ import annotations

import logging
import os
import sys

from tdrm_rl.config import RunConfig

# Offline hubs, no usage stats, no tokenizer thread pools fighting torch's.
DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
# What a Ray actor gets from the driver's environment (on a cluster it does not inherit it).
WORKER_KEYS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_EXTENSIONS_DIR", "RAY_USAGE_STATS_ENABLED",
               "TOKENIZERS_PARALLELISM", "PYTHONPATH", "TDRM_LOG_LEVEL")


def set_runtime_defaults() -> None:
    """The DEFAULTS (a variable already set wins), localhost-only Ray auth for a local instance, and a
    per-environment DeepSpeed JIT cache."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


def worker_env() -> dict[str, str]:
    """Environment every actor needs: this process's values of WORKER_KEYS, else the DEFAULTS."""
    env = {k: os.environ[k] for k in WORKER_KEYS if k in os.environ}
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    return env


def init_ray(cfg: RunConfig) -> bool:
    """Connect to `cluster.address` / RAY_ADDRESS if given, else start a local instance. Returns True if started."""
    import ray

    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    # Ports and dashboard bind to localhost unless the recipe names another address.
    # address="local": a new instance even if `ray start` left a cluster behind (plain init would join it).
    ray.init(address="local", num_cpus=cfg.cluster.num_cpus, include_dashboard=cfg.cluster.include_dashboard,
             dashboard_host=cfg.cluster.dashboard_host, _node_ip_address=cfg.cluster.node_ip_address,
             logging_level=logging.WARNING)
    return True
