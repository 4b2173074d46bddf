"""prm.reuse_values_forward: the TD update backpropagates through the values pass instead of running its own forward,
and one step trains the PRM to the same weights and gives the same rewards as the two-pass step (float tolerance)."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.config import load_config
from tests.unit.rl.test_stages import SIZES, InProcessSteps, state

# Two accumulation chunks per PRM update (4 rows, micro-batch 2): several graphs are kept at once.
REUSE_SIZES = [s for s in SIZES if not s.startswith("prm.micro_batch_size")] + ["prm.micro_batch_size=2"]


class Recording(InProcessSteps):
    def make_batch(self, gen, problems, n):
        self.batch = super().make_batch(gen, problems, n)
        return self.batch


def one_step(path, tmp_path, *overrides):
    cfg = load_config(None, REUSE_SIZES + [f"trainer.output_dir={tmp_path}", *overrides])
    steps = Recording(cfg, path)
    metrics = steps.step(1)
    return steps, metrics


def assert_same_states(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("update, epochs", [("online", 1), ("online_before", 1), ("online", 2)])
def test_one_step_with_the_kept_values_pass_trains_the_prm_as_two_passes_do(tiny_path, tmp_path, update, epochs):
    """online_before reuses the first values pass for its update (the re-score after it is a fresh pass); with two
    epochs only the first goes through the kept graphs. The gradient norm pins the gradients themselves (Adam's
    first step hardly depends on their scale)."""
    common = [f"prm.update={update}", f"prm.epochs={epochs}"]
    off, off_metrics = one_step(tiny_path, tmp_path / "off", *common, "prm.reuse_values_forward=false")
    on, on_metrics = one_step(tiny_path, tmp_path / "on", *common, "prm.reuse_values_forward=true")
    assert torch.equal(off.batch.input_ids, on.batch.input_ids)  # the same rollouts: the comparison means something
    assert (off_metrics["prm/reused_values_forward"], on_metrics["prm/reused_values_forward"]) == (0.0, 1.0)
    torch.testing.assert_close(on.batch.step_logits, off.batch.step_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(on.batch.rewards, off.batch.rewards, atol=1e-6, rtol=1e-5)
    assert on_metrics["prm/td_loss"] == pytest.approx(off_metrics["prm/td_loss"], rel=1e-5)
    assert on_metrics["prm/grad_norm"] == pytest.approx(off_metrics["prm/grad_norm"], rel=1e-4)
    assert_same_states(state(on.prm), state(off.prm))
    prm = on.prm.workers[0]
    assert prm.kept is None  # the update consumed the graphs
    if update == "online" and epochs == 1:
        a_kept_pass_serves_only_its_own_rows_and_only_when_it_fits(prm, on.batch)


def a_kept_pass_serves_only_its_own_rows_and_only_when_it_fits(prm, batch):
    other = batch.select(list(reversed(range(len(batch)))))
    other.step_logits = prm.values(other, keep_for_update=True)
    assert prm.kept is not None and len(prm.kept.logits) == prm.grad_accum == 2
    assert prm.td_update(batch)["prm/reused_values_forward"] == 0.0  # kept for other rows: its own forward
    assert prm.kept is None
    prm.cfg.prm.reuse_values_max_gib = 0.0  # the memory guard: nothing fits, so the pass keeps nothing
    kept_nothing = prm.values(batch, keep_for_update=True)
    assert prm.kept is None
    torch.testing.assert_close(kept_nothing, prm.values(batch), atol=1e-5, rtol=1e-5)


def test_frozen_lower_layers_keep_no_activations_in_the_memory_guard():
    """prm.freeze_layers shrinks what a kept pass holds: SmolLM2-135M's 30 layers at 2,400 tokens need 3.3 GiB in
    float32, over the 2 GiB default, and with 24 of them frozen a fifth of that, so the pass is kept."""
    from tdrm_rl.workers.prm import kept_activation_bytes

    config = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
              "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
              "max_position_embeddings": 8192}
    full = kept_activation_bytes(config, 2400, False, 4)
    top6 = kept_activation_bytes(config, 2400, False, 4, frozen_layers=24)
    none = kept_activation_bytes(config, 2400, False, 4, frozen_layers=30)
    assert full > 2 * 1024 ** 3 > top6
    assert none < top6 < full and top6 == pytest.approx(none + (full - none) * 6 / 30)
