"""Bad input without workers: pathological verifier strings, degenerate responses, tokenizers without the
step delimiter, and the safe defaults (no remote code, safetensors only, localhost)."""

import os

import pytest
import torch

from tdrm_rl.algos.blend import aggregate_prm, blend_rewards
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.config import ModelConfig, RunConfig
from tdrm_rl.rl.metrics import response_counts
from tdrm_rl.models.load import build_tiny_policy, load_policy
from tdrm_rl.algos.prm_metrics import ranking_accuracy
from tdrm_rl.tasks.arith import verify
from tdrm_rl.algos.td import nstep_targets, prm_td_loss
from tdrm_rl.models.tokenizer import step_delimiter_problem

SMALL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


@pytest.mark.parametrize("response, answer", [
    ("\\boxed{" + "\\frac{" * 100_000 + "1" + "}" * 100_000 + "}", "1"),  # deeply nested LaTeX
    ("\\boxed{\\sqrt{\\sqrt{\\sqrt{" * 30_000 + "4" + "}}}" * 30_000 + "}", "2"),
    ("\\boxed{9**9**9}", "9**9**9"),  # a huge exponent as text: compared, never computed
    ("\\boxed{9^{9^{9}}}", "9^{9^{9}}"),
    ("\\boxed{" + "7" * 1_000_000 + "}", "7" * 1_000_000),  # a 1 MB answer
    ("x" * 1_000_000, "7"),  # 1 MB without an answer
    ("\\boxed{__import__('os').system('touch PWNED')}", "0"),
])
def test_arith_verifier_scores_pathological_answers_as_wrong(response, answer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert verify(response, answer) == 0.0
    assert not os.path.exists("PWNED")  # nothing was executed


def test_degenerate_responses_are_scored_and_counted_not_dropped(tok):
    """Empty, no-delimiter and no-answer responses flow through collate, the PRM maths and the blend."""
    texts = ["", "12+5=17", "12+5=17\n\n17*2=34", "12+5=17\n\n\\boxed{17}"]
    responses = [tok.encode(t, add_special_tokens=False) for t in texts]
    prompt = tok.encode("Start with 12: +5\n", add_special_tokens=False)
    batch = collate([prompt] * 4, responses, [0, 0, 0, 0], TokenTexts(tok), pad_id=tok.pad_token_id)
    assert batch.step_mask.sum(1).tolist() == [0, 1, 2, 2]  # the empty response has no step to score
    outcome = torch.tensor([verify(t, "17") for t in texts])
    assert outcome.tolist() == [0.0, 0.0, 0.0, 1.0]
    logits = torch.randn(batch.step_mask.shape) * batch.step_mask
    score = aggregate_prm(logits, batch.step_mask, "before_answer")
    rewards = blend_rewards(outcome, score, 0.8, 0.2, batch.group_ids, False)
    targets = nstep_targets(torch.sigmoid(logits), None, batch.step_mask, outcome, 2, 0.8)
    loss = prm_td_loss(logits, targets, batch.step_mask, 1.0)
    assert torch.isfinite(score).all() and torch.isfinite(rewards).all() and torch.isfinite(loss)
    assert 0.0 <= ranking_accuracy(score, outcome, batch.group_ids) <= 1.0
    counts = response_counts(texts, "\n\n")
    assert counts == {"response/empty_frac": 0.25, "response/no_delimiter_frac": 0.5,
                      "response/no_answer_frac": 0.75}


def test_no_answer_counts_follow_the_configured_answer_extraction():
    texts = ["8 - 2 = 6", "The final answer is \\boxed{7}.", "I do not know.", ""]
    assert response_counts(texts, "\n\n")["response/no_answer_frac"] == 0.75
    assert response_counts(texts, "\n\n", "boxed_or_last_number")["response/no_answer_frac"] == 0.5
    assert response_counts(texts, "\n\n", "last_number")["response/no_answer_frac"] == 0.5


def test_tokenizer_without_the_step_delimiter_is_named(tok):
    assert step_delimiter_problem(tok, "\n\n") is None
    assert step_delimiter_problem(tok, "<step>") is None  # spelled out in characters: fine
    assert "unknown token" in step_delimiter_problem(tok, "\t\t")
    assert "unknown token" in step_delimiter_problem(tok, "§")


def test_safe_defaults():
    cfg = RunConfig()
    assert cfg.model.trust_remote_code is False
    assert cfg.cluster.dashboard_host == "127.0.0.1" and cfg.cluster.node_ip_address == "127.0.0.1"
    assert cfg.cluster.include_dashboard is False
    assert cfg.trainer.resume == "none"


def test_weights_load_only_from_safetensors(tok, tmp_path):
    """A pickle-format checkpoint (pytorch_model.bin) is refused, never unpickled."""
    model = build_tiny_policy(tok, SMALL, seed=0)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # the legacy pickle format
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot load the model"):
        load_policy(str(tmp_path))


def test_library_never_unpickles_user_files():
    """No pickle / torch.load / eval in the library except torch.load(weights_only=True)."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
    offenders = []
    for package in ("tdrm_rl", "workers"):  # workers/ installs as tdrm_rl.workers
        for dirpath, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                for number, line in enumerate(open(os.path.join(dirpath, name)), start=1):
                    code = line.split("#")[0]
                    if ("pickle" in code or " eval(" in code or "exec(" in code
                            or ("torch.load(" in code and "weights_only=True" not in code)):
                        offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, offenders
