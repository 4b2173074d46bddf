"""prm.online_lr_scale: RL's PRM worker trains every parameter group at that fraction of the warm-up's rates."""

from __future__ import annotations

import pytest

from tdrm_rl.config import load_config
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.prm import PRMWorker
from tests.unit.rl.test_stages import SIZES


def test_online_lr_scale_scales_the_head_and_the_backbone_rates(tiny_path, tmp_path):
    cfg = load_config(None, SIZES + [f"trainer.output_dir={tmp_path}", "prm.backbone_lr=2e-5"])
    port = free_port()
    rates = {}
    for scale in (1.0, 0.1):
        worker = PRMWorker(cfg, tiny_path, num_threads=1, lr_scale=scale)
        worker.setup_distributed("127.0.0.1", port)  # one gloo group for the process; the second is a no-op
        worker.setup()
        rates[scale] = sorted(group["lr"] for group in worker.guarded_optimizer.param_groups)
    assert rates[1.0] == pytest.approx([2e-5, 1e-3])  # backbone, value head (prm.lr in SIZES)
    assert rates[0.1] == pytest.approx([2e-6, 1e-4])
