"""tdrm-rl: online RL for language models with a TD-trained process reward model as critic (TDRM).

The library (this package) is pure and testable without Ray; the Ray roles live in the repository's
top-level `workers/` folder and install as `tdrm_rl.workers` (see pyproject.toml).

Public API, imported lazily so that `import tdrm_rl` stays cheap:
    RLTrainer                the online loop (tdrm_rl.rl.trainer)
    load_config, RunConfig   recipes (tdrm_rl.config)
    register_adv_estimator   the advantage-estimator registry (tdrm_rl.algos.registry)
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"
__all__ = ["RLTrainer", "RunConfig", "load_config", "register_adv_estimator", "__version__"]

# Run from a source tree (PYTHONPATH=., `ray job submit --working-dir .`), `tdrm_rl.workers` is the sibling
# folder `workers/`. Installed, it is a real subpackage and this does nothing.
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "workers")) and os.path.isfile(
        os.path.join(_SOURCE_ROOT, "workers", "__init__.py")):
    __path__.append(_SOURCE_ROOT)

_API = {
    "RLTrainer": "tdrm_rl.rl.trainer",
    "RunConfig": "tdrm_rl.config",
    "load_config": "tdrm_rl.config",
    "register_adv_estimator": "tdrm_rl.algos.registry",
}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'tdrm_rl' has no attribute {name!r}")
