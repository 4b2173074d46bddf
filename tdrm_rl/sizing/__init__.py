"""GPU memory sizing of a recipe's layout (`tdrm-rl plan`, and the check `train` runs before Ray).

shapes.py  a model's architecture from its config.json (local, HF cache, or bundled under model_configs/)
memory.py  bytes per process, term by term (states, activations, logits, vLLM share, sync buffers)
plan.py    the layout's processes on their GPUs (workers/placement.py) and whether each GPU fits
search.py  the largest lengths and micro-batches that fit; `check_plan` for train
render.py  the text of `tdrm-rl plan` and the markdown tables of docs/cluster.md
docs.py    `python -m tdrm_rl.sizing.docs` regenerates those tables
"""

from tdrm_rl.sizing.plan import Plan, build_plan
from tdrm_rl.sizing.render import plan_text
from tdrm_rl.sizing.search import PlanError, check_plan, largest_fitting
from tdrm_rl.sizing.shapes import ModelShape, ShapeError, model_shape

__all__ = ["ModelShape", "Plan", "PlanError", "ShapeError", "build_plan", "check_plan", "largest_fitting",
           "model_shape", "plan_text"]
