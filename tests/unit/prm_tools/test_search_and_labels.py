"""PRM-guided step search on a toy tree with a known best path; Monte-Carlo labels; smoothness."""

from __future__ import annotations

import math

import pytest
import torch

from tdrm_rl.models.generation import Generated
from tdrm_rl.data.rollout_file import mc_step_labels
from tdrm_rl.prm_tools.search import SearchSettings, step_search
from tdrm_rl.prm_tools.smoothness import smoothness, step_token_counts, td_error_by_step

# A toy "policy": each state (the text so far) has a fixed list of next steps; sample j of a request
# takes option j % len(options). Steps are single characters, ended by "|" (the delimiter), and "!"
# ends a solution. Values are fixed per prefix.
TREE = {
    "": ["a|", "b|"],
    "a|": ["c|", "d!"],
    "b|": ["e|", "f!"],
    "a|c|": ["g!", "h!"],
    "b|e|": ["i!", "j!"],
}
VALUE = {"a|": 0.6, "b|": 0.5, "a|c|": 0.3, "a|d!": 0.4, "b|e|": 0.9, "b|f!": 0.2,
         "a|c|g!": 0.35, "a|c|h!": 0.3, "b|e|i!": 0.1, "b|e|j!": 0.95}


class ToyBackend:
    """The rollout interface on the toy tree: generate(prompts, n, sampling) with a stop string."""

    def __init__(self) -> None:
        self.calls = []

    def generate(self, prompts, n, sampling):
        assert sampling["stop"] == ["|"]
        self.calls.append(len(prompts) * n)
        out = Generated()
        for p in prompts:
            state = p.split(">", 1)[1]
            options = TREE[state]
            for j in range(n):
                text = options[j % len(options)]
                out.prompt_ids.append([0])
                out.response_ids.append([ord(c) for c in text])
                out.response_text.append(text)
                out.response_logprobs.append([0.0] * len(text))
        return out


def toy_score(scored):
    def score(problems, responses):
        texts = ["".join(chr(t) for t in r) for r in responses]
        scored.extend(texts)
        return [VALUE[t] for t in texts]
    return score


def settings(**kw):
    return SearchSettings(delimiter="|", max_depth=3, max_length=10, step_max_tokens=2, **kw)


def test_beam_search_finds_the_known_best_path_and_greedy_does_not() -> None:
    scored: list[str] = []
    backend = ToyBackend()
    beam = step_search(["q>"], backend.generate, toy_score(scored), settings(beam_width=2, num_branch=2))
    assert beam.best[0].text == "b|e|j!" and beam.best[0].value == pytest.approx(0.95)
    # Every distinct prefix was scored once (the cache), every generated token counted.
    assert sorted(scored) == sorted(set(scored))
    assert beam.tokens_generated == 2 * sum(backend.calls)
    greedy = step_search(["q>"], ToyBackend().generate, toy_score([]), settings(beam_width=1, num_branch=2))
    # Myopic: "a|" (0.6) beats "b|" (0.5), then the finished "a|d!" (0.4) beats "a|c|" (0.3).
    assert greedy.best[0].text == "a|d!" and greedy.best[0].finished


def test_duplicate_branches_hit_the_cache() -> None:
    scored: list[str] = []
    res = step_search(["q>", "q>"], ToyBackend().generate, toy_score(scored), settings(beam_width=1, num_branch=4))
    # 4 samples of 2 options per step: problem 0 scores 2 new prefixes per step (2 duplicates are hits);
    # problem 1 asks the same question, so all 4 of its samples are hits. Two steps: "a|", then "a|d!".
    assert sorted(scored) == ["a|", "a|c|", "a|d!", "b|"]
    assert res.prm_scored == 4 and res.cache_hits == 12
    assert res.best[0].text == res.best[1].text == "a|d!"


def test_max_depth_and_length_stop_the_search() -> None:
    res = step_search(["q>"], ToyBackend().generate, toy_score([]),
                      SearchSettings(delimiter="|", beam_width=2, num_branch=2, max_depth=1, max_length=10,
                                     step_max_tokens=2))
    assert res.best[0].text == "a|" and res.best[0].finished  # cut at depth 1: the best first step
    with pytest.raises(ValueError, match="beam_width"):
        step_search(["q>"], ToyBackend().generate, toy_score([]), SearchSettings(beam_width=0))


def test_mc_labels_hard_soft_and_terminal() -> None:
    success = torch.tensor([[0., 2., 3., 0.], [1., 0., 0., 0.]])
    samples = torch.tensor([4., 4.])
    mask = torch.tensor([[1., 1., 1., 1.], [1., 1., 0., 0.]])
    outcome = torch.tensor([1., 0.])
    hard = mc_step_labels(success, samples, mask, outcome)
    assert hard.tolist() == [[0., 1., 1., 1.], [1., 0., 0., 0.]]  # terminal = outcome, whatever the count says
    soft = mc_step_labels(success, samples, mask, outcome, hard=False)
    assert soft.tolist() == [[0., 0.5, 0.75, 1.], [0.25, 0., 0., 0.]]


def test_smoothness_variants_and_td_error_by_step() -> None:
    values = torch.tensor([[0.2, 0.6, 0.5], [0.9, 0.1, 0.0]])
    mask = torch.tensor([[1., 1., 1.], [1., 1., 0.]])
    assert smoothness(values, mask) == pytest.approx((0.4 + 0.1 + 0.8) / 3)
    ends = torch.tensor([[5, 9, 15], [7, 8, 0]])  # prompt_len 4: step tokens [2, 4, 6] and [4, 1]
    tokens = step_token_counts(ends, mask, prompt_len=4)
    assert tokens.tolist() == [[2., 4., 6.], [4., 1., 0.]]
    assert smoothness(values, mask, tokens) == pytest.approx((0.4 / 4 + 0.1 / 6 + 0.8 / 1) / 3)
    assert math.isnan(smoothness(values[:, :1], mask[:, :1]))
    err = td_error_by_step(values, mask, torch.tensor([1., 0.]), n=1, gamma=1.0)
    # 1-step, gamma 1: y_i = W_{i+1}, and W at the terminal step is the outcome, not the network value.
    # Row 0 (outcome 1): |0.2-0.6|, |0.6-1|, |0.5-1|; row 1 (outcome 0): |0.9-0|, |0.1-0|.
    assert err.tolist() == pytest.approx([(0.4 + 0.9) / 2, (0.4 + 0.1) / 2, 0.5])
