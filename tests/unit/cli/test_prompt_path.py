"""One prompt path: for the same held-out problem, train (check_inputs, the rollout worker it runs), eval, rollouts,
prm-train / bon (the ids a rollouts file records) and search (the ids it generates from and the PRM scores) all
build the same token ids: the chat template with the system prompt around the question for a real-problem task,
and for the embedded arith task exactly the characters of its own compact prompt, as before."""

from __future__ import annotations

import json
import os

import pytest

from tdrm_rl.cli.main import main
from tdrm_rl.config import load_config
from tdrm_rl.models.tokenizer import build_char_tokenizer, byte_symbol, char_vocab
from tdrm_rl.tasks.prompts import SYSTEM_PROMPT
from tests.conftest import bos_char_tokenizer
from tests.unit.conftest import save_tiny_policy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
COMMON = ["rollout.max_new_tokens=6", "trainer.torch_threads=1", "trainer.progress=false", "data.eval_size=2",
          "prm.micro_batch_size=4"]


def templated_policy(folder, bos: bool):
    """A tiny policy whose tokenizer has a chat template, as a real instruct model's does; with `bos`, one whose
    template writes <bos> and whose pipeline adds it too (as R1-Distill's: a second BOS must not appear)."""
    path = save_tiny_policy(str(folder))
    if bos:
        tok = bos_char_tokenizer()
    else:
        tok = build_char_tokenizer()
        tok.chat_template = TEMPLATE
    tok.save_pretrained(path)
    return path


def rendered(question: str, bos: bool) -> str:
    if bos:
        return f"<bos>system: {SYSTEM_PROMPT}\nuser: {question}\nassistant:"
    return f"<system>{SYSTEM_PROMPT}\n<user>{question}\n<assistant>"


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "plain.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(1, 7)))
    return str(path)


def lines(path):
    return [json.loads(line) for line in open(path)]


class RecordingRollout:
    """A real rollout worker; keeps the prompt ids of every generate call."""

    def __init__(self, worker):
        self.worker, self.prompt_ids = worker, []

    def generate(self, prompts, n, sampling):
        gen = self.worker.generate(prompts, n, sampling)
        self.prompt_ids += gen.prompt_ids
        return gen


class RecordingPRM:
    """A real PRM worker; keeps the prompt ids (attended prompt tokens) of every batch it scores."""

    def __init__(self, worker):
        self.worker, self.tokenizer, self.prompt_ids = worker, worker.tokenizer, []

    def values(self, batch):
        self.prompt_ids += prompt_part(batch)
        return self.worker.values(batch)


def prompt_part(batch):
    P = batch.prompt_len
    return [row[:P][mask[:P].bool()].tolist() for row, mask in zip(batch.input_ids, batch.attention_mask)]


def ids_per_command(tmp_path, overrides, policy):
    """{command: prompt ids of held-out problem 0 and 1} as each command builds them."""
    from tdrm_rl.data.rollout_file import read_jsonl, records_batch
    from tdrm_rl.prm_tools.offline import local_prm_worker, local_rollout_worker, search_eval
    from tdrm_rl.prm_tools.search import SearchSettings
    from tdrm_rl.rl.trainer import check_inputs

    cfg = load_config(RECIPE, COMMON + overrides)
    out = {}
    task, tokenizer = check_inputs(cfg, policy)  # train: the task RLTrainer evaluates and trains on
    rollout = local_rollout_worker(cfg, policy)  # the class train's rollout actors run (rollout.backend=hf)
    out["train"] = rollout.generate([p.prompt for p in task.eval_problems(2)], 1, {"max_new_tokens": 1}).prompt_ids

    assert main(["eval", RECIPE, *COMMON, *overrides, "--samples", "2", "--out", str(tmp_path / "eval")]) == 0
    out["eval"] = [r["prompt_ids"] for r in lines(tmp_path / "eval" / "greedy.jsonl")]
    out["eval samples"] = [r["prompt_ids"] for r in lines(tmp_path / "eval" / "samples.jsonl")][::2]

    rollouts = str(tmp_path / "rollouts.jsonl")
    assert main(["rollouts", RECIPE, *COMMON, *overrides, "--split", "eval", "--problems", "2", "-n", "1",
                 "--out", rollouts]) == 0
    out["rollouts"] = [r["prompt_ids"] for r in lines(rollouts)]
    # prm-train and bon read the rollouts file and batch it for the PRM (and the log-prob verifier) this way
    out["prm-train / bon"] = prompt_part(records_batch(read_jsonl(rollouts), tokenizer, cfg.data.step_delimiter))

    spy_rollout = RecordingRollout(rollout)
    spy_prm = RecordingPRM(local_prm_worker(cfg, policy, init_from_policy=True))
    settings = SearchSettings(beam_width=1, num_branch=1, max_depth=1, max_length=6, step_max_tokens=6)
    search_eval(cfg, spy_rollout, spy_prm, task.eval_problems(2), settings, task=task)
    out["search generate"] = spy_rollout.prompt_ids
    out["search PRM"] = spy_prm.prompt_ids
    return out


@pytest.mark.parametrize("bos", [False, True], ids=["template", "template-with-bos"])
def test_a_templated_model_gets_the_same_chat_prompt_from_every_command(tmp_path, problems_file, bos):
    policy = templated_policy(tmp_path / "policy", bos)
    overrides = ["data.task=jsonl", f"data.path={problems_file}", f"model.policy_path={policy}"]
    got = ids_per_command(tmp_path, overrides, policy)
    tok = bos_char_tokenizer() if bos else build_char_tokenizer()
    # problem 0 and 1 of the held-out rows (the last data.eval_size rows): the template around the bare question
    expected = [tok(rendered(f"What is {i} + {i}?", bos), add_special_tokens=False)["input_ids"] for i in (5, 6)]
    assert [e.count(tok.bos_token_id) for e in expected] == [int(bos)] * 2
    for command, ids in got.items():
        assert ids == expected, command


def test_the_arith_prompt_is_its_own_characters_as_before(tmp_path, tiny_path):
    from tdrm_rl.tasks import get_task

    got = ids_per_command(tmp_path, [f"model.policy_path={tiny_path}"], tiny_path)
    problems = get_task(load_config(RECIPE, COMMON).data).eval_problems(2)
    assert all(p.prompt.startswith("Start with ") and p.prompt.endswith("\n") for p in problems)  # no template
    vocab = char_vocab()
    expected = [[vocab[byte_symbol(ord(c))] for c in p.prompt] for p in problems]  # one id per character
    for command, ids in got.items():
        assert ids == expected, command
