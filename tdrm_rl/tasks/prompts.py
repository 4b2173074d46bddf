"""Prompts for real models: chat templates, the system prompt, and the PRM's own view of a batch.

One prompt path: `load_prompted_task(cfg, policy_path)` is the task as the policy sees it, for `train`, `eval`,
`rollouts`, `search` and the PRM warm-up (`prm-train` and `bon` read the prompt ids a rollouts file recorded).

Tasks with `needs_template = True` hand out bare questions. `PromptedTask` renders them with the
policy tokenizer's chat template (system + user turn, generation prompt appended), or with a plain
template when the tokenizer has none. The system prompt asks for steps separated by blank lines
(the default step delimiter) and a `\\boxed{}` final answer (what the verifiers read).

The PRM worker reads token ids from the Batch, which `collate` builds from the policy's tokens.
When the PRM's tokenizer or chat template differs from the policy's, `PRMView` re-tokenises
each trajectory for the PRM (its own template around the same question, the same response text)
and collates a PRM batch whose step ends sit on the PRM's tokens. Same tokenizer: the policy
batch goes to the PRM unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, Sequence

from tdrm_rl.data.batch import Batch
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.models.tokenizer import encode_prompts

SYSTEM_PROMPT = ("Solve the problem step by step. Separate consecutive steps with a blank line. "
                 "Finish with the final answer in the form \\boxed{answer}.")
# data.answer_extraction=gsm8k reads a "#### answer" line, so its prompt asks for one.
GSM8K_SYSTEM_PROMPT = ("Solve the problem step by step. Separate consecutive steps with a blank line. "
                       "Finish with a last line of the form #### answer.")


def system_prompt_for(system_prompt: Optional[str], answer_extraction: str = "boxed") -> str:
    """data.system_prompt, or the default that asks for the format `answer_extraction` reads."""
    if system_prompt is not None:
        return system_prompt
    return GSM8K_SYSTEM_PROMPT if answer_extraction == "gsm8k" else SYSTEM_PROMPT


def render_prompt(tokenizer: Any, question: str, system_prompt: Optional[str] = None) -> str:
    """The model input for `question`: the chat template when the tokenizer has one, else plain text."""
    system = system_prompt_for(system_prompt)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # some templates refuse a system turn: fold it into the user turn
            merged = [{"role": "user", "content": f"{system}\n\n{question}"}]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    return f"{system}\n\nProblem: {question}\n\nSolution:\n"


class PromptedTask:
    """A task whose problems come out rendered for one tokenizer (bare question kept in `question`)."""

    def __init__(self, task: Any, tokenizer: Any, system_prompt: Optional[str] = None) -> None:
        self.task = task
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt

    def __getattr__(self, name: str) -> Any:  # name, skipped_rows, ... of the wrapped task
        return getattr(self.task, name)

    def _render(self, problems: list[Any]) -> list[Any]:
        if not getattr(self.task, "needs_template", False):
            return problems
        return [replace(p, prompt=render_prompt(self.tokenizer, p.prompt, self.system_prompt), question=p.prompt)
                for p in problems]

    def sample_train(self, n: int, rng: Any) -> list[Any]:
        return self._render(self.task.sample_train(n, rng))

    def train_set(self, size: int) -> Optional[list[Any]]:
        pool = self.task.train_set(size)
        return None if pool is None else self._render(pool)

    def eval_problems(self, n: int) -> list[Any]:
        return self._render(self.task.eval_problems(n))

    def verify(self, response: Any, answer: Any) -> float:
        return self.task.verify(response, answer)


def load_prompted_task(cfg: Any, policy_path: str) -> tuple[PromptedTask, Any]:
    """The task of `cfg.data` as the policy sees it, and the policy tokenizer: every command's one prompt path.

    Checks that the tokenizer carries the step delimiter (a ConfigError naming the key otherwise): without it
    there are no steps for the PRM to score. Cheap and worker-free, so commands call it before starting Ray.
    """
    from transformers import AutoTokenizer

    from tdrm_rl.config import ConfigError
    from tdrm_rl.models.load import resolve_model_path
    from tdrm_rl.models.tokenizer import step_delimiter_problem
    from tdrm_rl.tasks import get_task

    task = get_task(cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(policy_path, "policy"),
                                              trust_remote_code=cfg.model.trust_remote_code)
    problem = step_delimiter_problem(tokenizer, cfg.data.step_delimiter)
    if problem:
        raise ConfigError(f"key 'data.step_delimiter' = {cfg.data.step_delimiter!r} does not fit the tokenizer "
                          f"of {policy_path}: {problem}")
    system = system_prompt_for(cfg.data.system_prompt, cfg.data.answer_extraction)
    return PromptedTask(task, tokenizer, system), tokenizer


def same_tokenization(a: Any, b: Any) -> bool:
    """Would both tokenizers give the same ids and the same prompt text?"""
    if a is b:
        return True
    return (a.get_vocab() == b.get_vocab() and getattr(a, "chat_template", None) == getattr(b, "chat_template", None)
            and a.all_special_tokens == b.all_special_tokens and a.pad_token_id == b.pad_token_id)


class PRMView:
    """Builds the PRM's batch from a policy batch when the two tokenise differently."""

    def __init__(self, tokenizer: Any, system_prompt: Optional[str] = None, delimiter: str = "\n\n") -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.delimiter = delimiter
        self.token_texts = TokenTexts(tokenizer)

    def prompt_text(self, problem: Any) -> str:
        """The PRM's prompt: its own template around the bare question (templated tasks) or the task's text."""
        if problem.question:
            return render_prompt(self.tokenizer, problem.question, self.system_prompt)
        return problem.prompt

    def __call__(self, batch: Batch, problems: Sequence[Any]) -> Batch:
        """A Batch over the PRM's tokens: same rows, groups, outcomes and step count per row."""
        tok = self.tokenizer
        texts = batch.meta["response_text"]
        groups = batch.group_ids.tolist()
        prompts = [self.prompt_text(problems[g]) for g in groups]
        prompt_ids = encode_prompts(tok, prompts)  # the PRM's own BOS, once, as generation would give it
        response_ids = tok(list(texts), add_special_tokens=False)["input_ids"]
        out = collate(prompt_ids, response_ids, groups, self.token_texts, pad_id=tok.pad_token_id,
                      delimiter=self.delimiter, meta=dict(batch.meta))
        mismatch = (out.step_mask.sum(1) != batch.step_mask.sum(1)).nonzero().flatten().tolist()
        if mismatch:
            i = mismatch[0]
            raise ValueError(f"PRM tokenizer splits response {i} into {int(out.step_mask[i].sum())} steps, the "
                             f"policy's into {int(batch.step_mask[i].sum())}; the PRM tokenizer does not "
                             f"round-trip this text: {texts[i][:80]!r}")
        out.outcome = batch.outcome
        return out
