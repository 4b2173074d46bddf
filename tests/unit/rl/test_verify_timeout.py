"""A verifier input that never returns (issue 16 item 6): data.verify_timeout_s bounds its check, the step's verify
stage goes on, the answer scores as wrong and counts in verify/timeouts. The real stage code, task (a jsonl file
checked by math-verify) and checker child process; the responses are given, since no model writes this one."""

from __future__ import annotations

import json
import time

from tdrm_rl.config import load_config
from tdrm_rl.data.collate import TokenTexts
from tdrm_rl.models.generation import Generated
from tdrm_rl.models.tokenizer import build_char_tokenizer
from tdrm_rl.rl.stages import StepStages
from tdrm_rl.tasks import get_task

# Room for a real check on a loaded machine; far below what the input below takes.
TIMEOUT_S = 4.0
# 9^(9^9) has 370 million digits: math-verify's sympy computes it in C, where no signal stops it (> 30 s measured
# with a 60 s inner timeout); only the checker's deadline ends the check.
NEVER_RETURNS = "so \\boxed{9^{9^{9}}}"


class VerifyStage(StepStages):
    """The stage class with what its verify stage reads: config, task, tokenizer."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.task = get_task(cfg.data)
        self.tokenizer = build_char_tokenizer()
        self.token_texts = TokenTexts(self.tokenizer)


def generated(tokenizer, prompts: list[str], responses: list[str]) -> Generated:
    ids = [tokenizer(r, add_special_tokens=False).input_ids for r in responses]
    return Generated(prompt_ids=[tokenizer(p, add_special_tokens=False).input_ids for p in prompts],
                     response_ids=ids, response_text=responses, response_logprobs=[[0.0] * len(i) for i in ids])


def test_a_check_that_never_returns_is_cut_at_verify_timeout_scored_wrong_and_counted(tmp_path, tiny_path):
    rows = [{"prompt": f"What is {i} * 2?", "answer": str(2 * i)} for i in range(1, 8)] + \
           [{"prompt": "What is 1 / 2?", "answer": "\\frac{1}{2}"}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"model.policy_path={tiny_path}", "data.task=jsonl", f"data.path={data}",
                             "data.eval_size=2", "rollout.group_size=2", f"data.verify_timeout_s={TIMEOUT_S}",
                             f"trainer.output_dir={tmp_path}/run"])
    stages = VerifyStage(cfg)
    problems = [stages.task.train[2], stages.task.heldout[-1]]  # answers "6" and \frac{1}{2}
    assert stages.task.verify("\\boxed{0.5}", "\\frac{1}{2}") == 1.0  # the checker child is up before the clock
    responses = ["3*2=6\n\n\\boxed{6}", "\\boxed{7}", "\\boxed{0.5}", NEVER_RETURNS]
    gen = generated(stages.tokenizer, [p.prompt for p in problems for _ in range(2)], responses)

    start = time.perf_counter()
    batch = stages.verify_stage(gen, problems, None)
    seconds = time.perf_counter() - start

    assert batch.outcome.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert stages.verify_timeouts == 1
    assert seconds < TIMEOUT_S + 10.0  # two quick checks and the deadline
    # a fresh checker child serves the next check; the count is per step, and nothing was cut off this time
    stages.verify_timeouts = 0
    assert stages.verify(["\\boxed{0.5}"], ["\\frac{1}{2}"]).tolist() == [1.0] and stages.verify_timeouts == 0
