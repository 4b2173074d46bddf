"""PRM-guided step-level search (beam search over reasoning steps).

Per problem, each live beam is extended by `num_branch` sampled next steps (generated with the step
delimiter as a stop string, through the rollout backend's `generate(prompts, n, sampling)`). Every
new prefix is scored by the PRM (its value at the last step end; cached per prefix, so duplicate
branches cost one score), and the `beam_width` best prefixes are kept. A kept prefix that did not
end at a delimiter (EOS or the length limit) is finished; the others go on, up to `max_depth`
steps. The answer is the finished solution with the highest value. beam_width = 1 is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.models.generation import Generated
from tdrm_rl.models.tokenizer import encode_prompts
from tdrm_rl.algos.td import terminal_mask

__all__ = ["SearchSettings", "Node", "SearchResult", "step_search", "PRMPrefixScorer"]

GenerateFn = Callable[[list[str], int, dict], Generated]
# score(problem indices, response token ids) -> value of each response's last step
ScoreFn = Callable[[list[int], list[list[int]]], list[float]]


@dataclass
class SearchSettings:
    beam_width: int = 1
    num_branch: int = 4
    max_depth: int = 8  # steps per solution
    max_length: int = 96  # response tokens per solution
    step_max_tokens: int = 32  # tokens per generated step
    delimiter: str = "\n\n"
    temperature: float = 1.0
    top_p: float = 1.0

    def check(self) -> None:
        for name in ("beam_width", "num_branch", "max_depth", "max_length", "step_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"search: {name} must be >= 1, got {getattr(self, name)}")
        if not self.delimiter:
            raise ValueError("search: the step delimiter must be a non-empty string")


@dataclass
class Node:
    response_ids: list[int]
    text: str
    value: float = float("nan")
    finished: bool = False


@dataclass
class SearchResult:
    best: list[Node]  # one per problem
    tokens_generated: int = 0
    prm_scored: int = 0  # prefixes the PRM actually scored (cache misses)
    cache_hits: int = 0
    per_problem_tokens: list[int] = field(default_factory=list)


def step_search(prompts: Sequence[str], generate: GenerateFn, score: ScoreFn, settings: SearchSettings) -> SearchResult:
    settings.check()
    live: list[list[Node]] = [[Node([], "")] for _ in prompts]
    done: list[list[Node]] = [[] for _ in prompts]
    # Value cache keyed by (prompt text, response ids): a prefix reached twice (a duplicate branch, or the
    # same problem asked twice) is scored once.
    cache: dict[tuple[str, tuple[int, ...]], float] = {}
    result = SearchResult(best=[], per_problem_tokens=[0] * len(prompts))
    sampling = {"temperature": settings.temperature, "top_p": settings.top_p,
                "max_new_tokens": settings.step_max_tokens, "stop": [settings.delimiter]}
    for depth in range(settings.max_depth):
        requests = [(p, node) for p, nodes in enumerate(live) for node in nodes]
        if not requests:
            break
        gen = generate([prompts[p] + node.text for p, node in requests], settings.num_branch, sampling)
        candidates: list[list[Node]] = [[] for _ in prompts]
        seen: list[set[tuple[int, ...]]] = [set() for _ in prompts]
        for j, (ids, text) in enumerate(zip(gen.response_ids, gen.response_text)):
            p, parent = requests[j // settings.num_branch]
            result.tokens_generated += len(ids)
            result.per_problem_tokens[p] += len(ids)
            child_ids = parent.response_ids + list(ids)
            finished = (not text.endswith(settings.delimiter) or len(child_ids) >= settings.max_length
                        or depth == settings.max_depth - 1)
            child_ids = child_ids[:settings.max_length]
            key = tuple(child_ids)
            if not ids or key in seen[p]:  # a duplicate branch is the same prefix: one beam slot, one score
                result.cache_hits += bool(ids)
                continue
            seen[p].add(key)
            candidates[p].append(Node(child_ids, parent.text + text, finished=finished))
        _score_candidates(prompts, candidates, score, cache, result)
        for p, cands in enumerate(candidates):
            # Stable sort: on equal values the earlier sample wins, so results are reproducible.
            kept = sorted(cands, key=lambda c: -c.value)[:settings.beam_width]
            done[p] += [c for c in kept if c.finished]
            live[p] = [c for c in kept if not c.finished]
    for p in range(len(prompts)):
        pool = done[p] + live[p]
        result.best.append(max(pool, key=lambda c: c.value) if pool else Node([], ""))
    return result


def _score_candidates(prompts: Sequence[str], candidates: list[list[Node]], score: ScoreFn, cache: dict,
                      result: SearchResult) -> None:
    todo: dict[tuple[str, tuple[int, ...]], int] = {}  # key -> problem index to score it with
    for p, cands in enumerate(candidates):
        for c in cands:
            key = (prompts[p], tuple(c.response_ids))
            if key in cache or key in todo:
                result.cache_hits += 1
            else:
                todo[key] = p
    if todo:
        keys = list(todo)
        values = score([todo[k] for k in keys], [list(k[1]) for k in keys])
        result.prm_scored += len(keys)
        cache.update({k: float(v) for k, v in zip(keys, values)})
    for p, cands in enumerate(candidates):
        for c in cands:
            c.value = cache[(prompts[p], tuple(c.response_ids))]


class PRMPrefixScorer:
    """score(problem indices, response ids) for `step_search`: V at each prefix's last step end, from
    one PRM forward pass per micro-batch (`prm_values` is PRMWorker.values, in-process or remote)."""

    def __init__(self, prm_values: Callable[[Batch], torch.Tensor], tokenizer, prompts: Sequence[str],
                 delimiter: str = "\n\n") -> None:
        self.prm_values = prm_values
        self.tokenizer = tokenizer
        self.prompt_ids = encode_prompts(tokenizer, list(prompts))  # the ids generate() starts from
        self.token_texts = TokenTexts(tokenizer)
        self.delimiter = delimiter

    def __call__(self, problems: list[int], responses: list[list[int]]) -> list[float]:
        batch = collate([self.prompt_ids[p] for p in problems], responses, problems, self.token_texts,
                        pad_id=self.tokenizer.pad_token_id, delimiter=self.delimiter)
        logits = self.prm_values(batch)
        last = torch.where(terminal_mask(batch.step_mask), logits, torch.zeros_like(logits)).sum(1)
        values = torch.sigmoid(last)
        has_steps = batch.step_mask.sum(1) > 0
        return torch.where(has_steps, values, torch.zeros_like(values)).tolist()
