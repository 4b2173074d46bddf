"""Batched HF `generate` for rollouts and evaluation, with per-token logprobs.

Sequences come back prompt-major: prompt i's n samples sit at indices i*n .. i*n + n - 1.
Logprobs are log_softmax of the RAW logits (temperature 1, no top-p), so a trainer's
forward pass over the same tokens must reproduce them (the rollout/trainer gap metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from tdrm_rl.models.tokenizer import encode_prompts

# No EOS ids at all (None would be refilled from the model's generation config): generation
# then runs to max_new_tokens.
_NO_EOS: list[int] = []


@dataclass
class Generated:
    """Rollout output, one entry per sequence (prompt-major)."""

    prompt_ids: list[list[int]] = field(default_factory=list)
    response_ids: list[list[int]] = field(default_factory=list)
    response_text: list[str] = field(default_factory=list)
    response_logprobs: list[list[float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.response_ids)

    def extend(self, other: "Generated") -> None:
        """Append another batch's sequences (keeps prompt-major order when batches are in order)."""
        for f in fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))

    def rows(self, start: int, stop: int) -> "Generated":
        """Sequences start .. stop-1."""
        return Generated(*(getattr(self, f.name)[start:stop] for f in fields(self)))

    @staticmethod
    def concat(parts: Sequence["Generated"]) -> "Generated":
        """The parts' sequences, in order."""
        out = Generated()
        for part in parts:
            out.extend(part)
        return out


def _generation_config(tokenizer: PreTrainedTokenizerBase, temperature: float, top_p: float,
                       max_new_tokens: int, stop_at_eos: bool) -> GenerationConfig:
    """Every sampling knob explicit: HF fills unset ones from the model's config (top_k=50 ...)."""
    greedy = temperature <= 0.0
    return GenerationConfig(
        do_sample=not greedy,
        temperature=None if greedy else float(temperature),
        top_p=None if greedy else float(top_p),
        top_k=None if greedy else 0,
        min_new_tokens=0,
        repetition_penalty=1.0,
        num_beams=1,
        max_new_tokens=int(max_new_tokens),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id if stop_at_eos else list(_NO_EOS),
        output_logits=True,
        return_dict_in_generate=True,
        use_cache=True,
    )


def _truncate_at_eos(ids: list[int], eos_id: int | None) -> int:
    """Length of the response up to and including its first EOS."""
    if eos_id is None:
        return len(ids)
    try:
        return ids.index(eos_id) + 1
    except ValueError:
        return len(ids)


class _StopOnStrings(StoppingCriteria):
    """Per row: done once its generated text (not the prompt) contains any stop string.

    Decodes only a window of the last tokens: every token holds at least one character, so
    `max(len(stop))` tokens (plus one for a string straddling the window edge) always suffice.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str], prompt_len: int) -> None:
        self.tokenizer, self.stop, self.prompt_len = tokenizer, list(stop), prompt_len
        self.window = max(len(s) for s in self.stop) + 1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in tails], device=input_ids.device)


def _truncate_at_stop(ids: list[int], tokenizer: PreTrainedTokenizerBase, stop: Sequence[str]) -> int:
    """Length of the response up to and including the token that completes the first stop string."""
    if not stop:
        return len(ids)
    text, ends = "", []
    for t in ids:  # char offset where each token ends, as the decoded text grows
        text += tokenizer.decode([t], skip_special_tokens=True)
        ends.append(len(text))
    hits = [i + len(s) for s in stop if (i := text.find(s)) >= 0]
    if not hits:
        return len(ids)
    first_end = min(hits)
    return next(k + 1 for k, e in enumerate(ends) if e >= first_end)


@torch.no_grad()
def _generate_batch(model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                    gen_cfg: GenerationConfig, stop_at_eos: bool, stop: Sequence[str] = ()) -> Generated:
    rows = encode_prompts(tokenizer, texts)
    width = max(len(r) for r in rows)
    device = next(model.parameters()).device
    # Left padding: decoder-only generation needs every prompt flush right.
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows], device=device)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    prompt_len = input_ids.shape[1]
    criteria = StoppingCriteriaList([_StopOnStrings(tokenizer, stop, prompt_len)]) if stop else None
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_cfg,
                         stopping_criteria=criteria)
    new_tokens = out.sequences[:, prompt_len:]
    if new_tokens.shape[1] == 0:
        logprobs = torch.zeros(new_tokens.shape, dtype=torch.float32)
    else:
        logits = torch.stack(out.logits, dim=1).float()  # [B, T, V], raw (pre-processor) logits
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
    new_list = new_tokens.cpu().tolist()
    lp_list = logprobs.cpu().tolist()
    mask_list = attention_mask.cpu().tolist()
    ids_list = input_ids.cpu().tolist()
    res = Generated()
    eos_id = tokenizer.eos_token_id if stop_at_eos else None
    for row, lp, m, prompt in zip(new_list, lp_list, mask_list, ids_list):
        n_keep = _truncate_at_eos(row, eos_id)
        n_keep = _truncate_at_stop(row[:n_keep], tokenizer, stop)
        res.prompt_ids.append([t for t, keep in zip(prompt, m) if keep])
        res.response_ids.append(row[:n_keep])
        res.response_logprobs.append(lp[:n_keep])
        res.response_text.append(tokenizer.decode(row[:n_keep], skip_special_tokens=True))
    return res


def generate(model: Any, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], n: int = 1, *,
             temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 96,
             micro_batch_size: int = 128, stop_at_eos: bool = True, stop: Sequence[str] = ()) -> Generated:
    """Sample `n` responses per prompt (greedy when temperature == 0), left-padded, batched.

    `stop`: strings that end a response (vLLM's `stop`, with the string kept in the output, i.e.
    `include_stop_str_in_output=True`): step-level search generates one step at a time this way.
    """
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError(f"generate: stop strings must be non-empty strings, got {list(stop)!r}")
    if n < 1 or micro_batch_size < 1:
        raise ValueError(f"generate: n and micro_batch_size must be >= 1 (got {n}, {micro_batch_size})")
    texts = [p for p in prompts for _ in range(n)]
    gen_cfg = _generation_config(tokenizer, temperature, top_p, max_new_tokens, stop_at_eos)
    was_training = model.training
    model.eval()
    result = Generated()
    try:
        for start in range(0, len(texts), micro_batch_size):
            result.extend(_generate_batch(model, tokenizer, texts[start:start + micro_batch_size], gen_cfg,
                                          stop_at_eos, stop))
    finally:
        model.train(was_training)
    return result


def accuracy(task: Any, problems: Sequence[Any], generated: Generated, n: int) -> float:
    """Mean verifier score over all sequences; sequence i*n + j answers problems[i]."""
    if len(generated) != len(problems) * n:
        raise ValueError(f"accuracy: {len(generated)} sequences for {len(problems)} problems x n={n}")
    if not problems:
        return 0.0
    scores = [task.verify(text, problems[i // n].answer) for i, text in enumerate(generated.response_text)]
    return sum(scores) / len(scores)
