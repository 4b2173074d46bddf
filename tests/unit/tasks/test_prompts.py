"""Prompts: chat template or plain text, the system prompt, the PRM's own tokenization of a batch."""

from __future__ import annotations

import copy
import random

import torch

from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.tasks.prompts import SYSTEM_PROMPT, PRMView, PromptedTask, render_prompt, same_tokenization
from tdrm_rl.tasks.arith import ArithTask
from tdrm_rl.tasks.base import Problem

TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")
NO_SYSTEM = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turn') }}{% endif %}" + TEMPLATE)


def templated(tok, template=TEMPLATE):
    out = copy.deepcopy(tok)
    out.chat_template = template
    return out


def test_system_prompt_asks_for_blank_line_steps_and_a_boxed_answer():
    assert "blank line" in SYSTEM_PROMPT and "\\boxed{" in SYSTEM_PROMPT


def test_chat_template_when_the_tokenizer_has_one(tok):
    text = render_prompt(templated(tok), "What is 2+3?")
    assert text == f"[system]{SYSTEM_PROMPT}\n[user]What is 2+3?\n[assistant]"


def test_plain_template_otherwise(tok):
    assert tok.chat_template is None
    assert render_prompt(tok, "What is 2+3?", "Be brief.") == "Be brief.\n\nProblem: What is 2+3?\n\nSolution:\n"


def test_template_without_a_system_turn_gets_it_in_the_user_turn(tok):
    text = render_prompt(templated(tok, NO_SYSTEM), "Q?", "Sys.")
    assert text == "[user]Sys.\n\nQ?\n[assistant]"


class _Bare:
    needs_template = True
    name = "bare"

    def sample_train(self, n, rng):
        return [Problem(prompt=f"q{i}", answer=str(i)) for i in range(n)]

    def eval_problems(self, n):
        return self.sample_train(n, None)

    def verify(self, response, answer):
        return 1.0 if response == answer else 0.0


def test_prompted_task_renders_bare_questions_and_keeps_them(tok):
    task = PromptedTask(_Bare(), templated(tok))
    p = task.eval_problems(2)[1]
    assert p.prompt == f"[system]{SYSTEM_PROMPT}\n[user]q1\n[assistant]" and p.question == "q1" and p.answer == "1"
    assert task.verify("1", "1") == 1.0 and task.name == "bare"
    arith = ArithTask(num_ops=2, operand_max=5)
    wrapped = PromptedTask(arith, templated(tok))
    assert wrapped.eval_problems(3) == arith.eval_problems(3)  # the tiny model's own prompt, untouched
    assert wrapped.sample_train(2, random.Random(0)) == arith.sample_train(2, random.Random(0))


def test_same_tokenization(tok):
    assert same_tokenization(tok, tok)
    assert same_tokenization(tok, copy.deepcopy(tok))
    assert not same_tokenization(tok, templated(tok))


def test_prm_view_retokenizes_with_the_prm_template_and_keeps_steps(tok):
    policy_tok, prm_tok = tok, templated(tok)
    problems = PromptedTask(_Bare(), policy_tok).eval_problems(2)
    responses = ["1+1=2\n\n2+2=4\n\n\\boxed{4}", "\\boxed{7}"]
    prompt_ids = [policy_tok(problems[g].prompt, add_special_tokens=False)["input_ids"] for g in (0, 1)]
    response_ids = [policy_tok(r, add_special_tokens=False)["input_ids"] for r in responses]
    batch = collate(prompt_ids, response_ids, [0, 1], TokenTexts(policy_tok), pad_id=policy_tok.pad_token_id,
                    meta={"response_text": responses, "answer": ["0", "1"]})
    batch.outcome = torch.tensor([1.0, 0.0])
    out = PRMView(prm_tok)(batch, problems)
    assert torch.equal(out.step_mask, batch.step_mask) and torch.equal(out.group_ids, batch.group_ids)
    assert out.outcome is batch.outcome and out.meta["answer"] == ["0", "1"]
    for row, g in enumerate((0, 1)):
        ids = out.input_ids[row][out.attention_mask[row].bool()].tolist()
        expected = render_prompt(prm_tok, problems[g].question) + responses[row]
        assert prm_tok.decode(ids) == expected
        # every step ends on the token holding the step's last character
        ends = out.step_ends[row][out.step_mask[row].bool()].tolist()
        pieces = [prm_tok.decode([int(out.input_ids[row, e])]) for e in ends]
        assert pieces[-1] == "}" and all(p == "\n\n" for p in pieces[:-1])
