"""`tdrm-rl export`: a run folder's checkpoint (written by the checkpoint writer the trainer uses, with real saved
policy and PRM weights) becomes plain HF folders: the policy loads with AutoModelForCausalLM and equals the
checkpoint's weights, the chat template reproduces the training prompt, the model card names the recipe and the
run's held-out numbers, and the PRM card's code, run with tdrm_rl unimportable, gives tdrm-rl's step values."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tdrm_rl.cli.main import main
from tdrm_rl.config import load_config, to_yaml
from tdrm_rl.models.export import export_run, training_chat_template
from tdrm_rl.models.load import load_prm, prm_step_logits
from tdrm_rl.models.tokenizer import build_char_tokenizer
from tdrm_rl.rl.checkpoint import write_checkpoint
from tdrm_rl.rl.tracking import MetricsLogger, write_run_command
from tdrm_rl.tasks import get_task
from tests.unit.conftest import save_tiny_policy

pytestmark = pytest.mark.usefixtures("one_thread")
EVALS = {0: 0.25, 2: 0.5, 4: 0.625}  # greedy accuracy logged at these steps


def build_run(root: str, readout: str) -> str:
    """A run folder as `tdrm-rl train` leaves it: command.json, metrics.jsonl, checkpoints at steps 2 and 4
    (different policy weights each), an eval.json."""
    run = os.path.join(root, "run")
    overrides = [f"trainer.output_dir={run}", "trainer.total_steps=4", f"prm.readout={readout}"]
    cfg = load_config(None, overrides)
    write_run_command(run, "train", "recipes/grpo_tdrm.yaml", overrides)
    logger = MetricsLogger(run, ["jsonl"], cfg)
    for step in range(5):
        logger.log(step, {"reward/rule_mean": 0.1 * step, **({"eval/greedy_accuracy": EVALS[step],
                                                                "eval/sampled_accuracy": EVALS[step] / 2}
                                                               if step in EVALS else {})})
    logger.close()
    for step in (2, 4):
        policy = save_tiny_policy(os.path.join(root, f"policy_{step}"), seed=step)

        def save_models(folder: str, policy: str = policy, step: int = step) -> None:
            model, tok = load_prm(policy, init_from_policy=True, readout=readout)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(step)
                model.score.weight.normal_(0, 0.05)  # a head whose values differ from step to step, unsaturated
                if readout == "logprob":
                    model.logprob_scale_raw.fill_(math.log(math.expm1(0.05)))  # a = 0.05
            model.save_pretrained(os.path.join(folder, "prm"))
            tok.save_pretrained(os.path.join(folder, "prm"))
            save_tiny_policy(os.path.join(folder, "policy"), seed=step)
            os.makedirs(os.path.join(folder, "policy_engine"))
            torch.save({"optimizer": 1}, os.path.join(folder, "policy_engine", "state.pt"))

        write_checkpoint(run, step, {"weights_version": step}, save_models, to_yaml(cfg), keep=0)
    os.makedirs(os.path.join(run, "eval"))  # where `tdrm-rl eval RECIPE model.policy_path=RUN` writes eval.json
    with open(os.path.join(run, "eval", "eval.json"), "w") as f:
        json.dump({"checkpoint": os.path.join(run, "checkpoints", "step_000004"), "task": "arith", "problems": 64,
                   "samples": 8, "greedy_accuracy": 0.6, "pass@k": {"1": 0.5, "8": 0.9}, "seconds": 12.5,
                   "command": "tdrm-rl eval recipes/grpo_tdrm.yaml --samples=8"}, f)
    return run


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{readout: (run folder, export folder)} for both PRM read-outs, exported by the CLI."""
    found = {}
    for readout in ("logprob", "hidden"):
        root = str(tmp_path_factory.mktemp(f"export-{readout}"))
        run = build_run(root, readout)
        out = os.path.join(root, "export")
        assert main(["export", run, "--out", out]) == 0
        found[readout] = run, out
    return found


@pytest.fixture(scope="module", params=["logprob", "hidden"])
def exported(request, exports):
    return (*exports[request.param], request.param)


def test_export_writes_plain_hf_folders_without_engine_state(exported):
    run, out, readout = exported
    assert sorted(os.listdir(out)) == ["policy", "prm"]
    policy = set(os.listdir(os.path.join(out, "policy")))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "tdrm_rl_config.yaml", "chat_template.jinja"} <= policy
    prm = set(os.listdir(os.path.join(out, "prm")))
    assert ({"value_head.safetensors", "value_head.json"} <= prm) == (readout == "logprob")
    everything = [n for d in ("policy", "prm") for n in os.listdir(os.path.join(out, d))]
    assert not [n for n in everything if n.endswith((".pt", ".bin", ".pth")) or "engine" in n]
    config = open(os.path.join(out, "policy", "tdrm_rl_config.yaml")).read()
    assert config == open(os.path.join(run, "checkpoints", "step_000004", "config.yaml")).read()


def test_exported_policy_loads_with_automodel_and_is_the_newest_checkpoint(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, out, _ = exported
    model = AutoModelForCausalLM.from_pretrained(os.path.join(out, "policy"))
    expected = load_file(os.path.join(run, "checkpoints", "step_000004", "policy", "model.safetensors"))
    older = load_file(os.path.join(run, "checkpoints", "step_000002", "policy", "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert not torch.equal(expected["lm_head.weight"], older["lm_head.weight"])
    tok = AutoTokenizer.from_pretrained(os.path.join(out, "policy"))
    prompt = get_task(load_config(None).data).eval_problems(1)[0].prompt
    messages = [{"role": "user", "content": prompt}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == prompt
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, ids["input_ids"].shape[1] + 5)


def test_model_card_names_the_recipe_and_the_runs_numbers(exported):
    _, out, _ = exported
    card = open(os.path.join(out, "policy", "README.md")).read()
    assert "`recipes/grpo_tdrm.yaml` with `trainer.output_dir=" in card and "`trainer.total_steps=4`" in card
    assert "| 0 (warm start) | 0.25 | 0.125 |" in card
    assert "| 4 (this checkpoint) | 0.625 | 0.3125 |" in card
    assert "| 2 " not in card  # the warm start and this checkpoint, not every evaluation
    assert "| greedy_accuracy | 0.6 |" in card and "| pass@k/8 | 0.9 |" in card  # eval.json
    assert "task arith, problems 64, samples 8" in card and "seconds" not in card
    assert "Reproduce: `tdrm-rl eval recipes/grpo_tdrm.yaml --samples=8`" in card
    assert "checkpoints/step_000004" in card
    assert f"LLM(model={os.path.join(out, 'policy')!r})" in card


def test_step_picks_an_older_checkpoint_and_its_numbers(exported, tmp_path):
    run, _, _ = exported
    out = str(tmp_path / "step2")
    written = export_run(run, out, step=2)
    assert written["step"] == 2
    got = load_file(os.path.join(out, "policy", "model.safetensors"))
    expected = load_file(os.path.join(run, "checkpoints", "step_000002", "policy", "model.safetensors"))
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    card = open(os.path.join(out, "policy", "README.md")).read()
    assert "| 2 (this checkpoint) | 0.5 | 0.25 |" in card and "0.625" not in card
    assert "measured another checkpoint" in card and "pass@k" not in card  # eval.json was of step 4


BLOCK_TDRM = """import importlib.abc, sys
class NoTdrm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tdrm_rl" or name.startswith("tdrm_rl."):
            raise ImportError("tdrm_rl is not installed here")
sys.meta_path.insert(0, NoTdrm())
try:
    import tdrm_rl
    raise SystemExit("the block failed: tdrm_rl imported")
except ImportError:
    pass
"""


def card_code(path: str) -> str:
    return re.search(r"```python\n(.*?)```", open(path).read(), re.S).group(1)


def reference_step_logits(prm_dir: str, prompt: str, response: str) -> torch.Tensor:
    """tdrm-rl's own step logits of one (prompt, response): load_prm, collate, prm_step_logits."""
    from tdrm_rl.data.collate import TokenTexts, collate

    model, tok = load_prm(prm_dir, init_from_policy=False)
    batch = collate([tok(prompt, add_special_tokens=False)["input_ids"]],
                    [tok(response, add_special_tokens=False)["input_ids"]], [0], TokenTexts(tok),
                    pad_id=tok.pad_token_id)
    logits = prm_step_logits(model.eval(), batch.input_ids, batch.attention_mask, batch.step_ends, batch.step_mask,
                             batch.response_mask)
    return logits[0, batch.step_mask[0].bool()]


def test_card_code_runs_without_tdrm_rl_and_gives_what_tdrm_rl_gives(exports, tmp_path):
    """The policy card's transformers code and each PRM card's code, where tdrm_rl cannot be imported."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, out = exports["logprob"]
    codes = {"policy": card_code(os.path.join(out, "policy", "README.md"))}
    codes.update({r: card_code(os.path.join(o, "prm", "README.md")) for r, (_, o) in exports.items()})
    # One interpreter for all three (each in its own namespace): one import of torch and transformers.
    runner = BLOCK_TDRM + "import json\nfor code in json.load(open(sys.argv[1])):\n    exec(code, {})\n"
    (tmp_path / "codes.json").write_text(json.dumps(list(codes.values())))
    (tmp_path / "run_cards.py").write_text(runner)
    done = subprocess.run([sys.executable, str(tmp_path / "run_cards.py"), str(tmp_path / "codes.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.rstrip("\n").split("\n")

    checkpoint = os.path.join(run, "checkpoints", "step_000004", "policy")
    tok, model = AutoTokenizer.from_pretrained(checkpoint), AutoModelForCausalLM.from_pretrained(checkpoint)
    prompt = get_task(load_config(None).data).eval_problems(1)[0].prompt
    ids = tok(prompt, return_tensors="pt")
    greedy = model.generate(**ids, max_new_tokens=load_config(None).rollout.max_new_tokens, do_sample=False)
    expected_text = tok.decode(greedy[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    prm_lines = printed[-2:]
    assert "\n".join(printed[:-2]) == expected_text  # the policy card's code generates what the checkpoint does

    for (readout, code), line in zip(list(codes.items())[1:], prm_lines):
        values = torch.tensor(json.loads(line), dtype=torch.float64)
        prompt = eval(re.search(r"^PROMPT = (.*)$", code, re.M).group(1))  # noqa: S307 - repr() of a string
        response = eval(re.search(r"^RESPONSE = (.*)$", code, re.M).group(1))  # noqa: S307
        expected = reference_step_logits(os.path.join(exports[readout][1], "prm"), prompt, response)
        assert len(values) == len(response.split("\n\n")) == expected.numel(), readout
        assert torch.allclose(torch.logit(values).float(), expected, atol=1e-4), (readout, values, expected)
        assert expected.std() > 0.05 and ((0.01 < values) & (values < 0.99)).all(), readout  # a head that varies


def test_plain_chat_template_renders_what_a_tokenizer_without_one_renders():
    from transformers import PreTrainedTokenizerFast

    from tdrm_rl.tasks.prompts import render_prompt

    tok = build_char_tokenizer()
    assert isinstance(tok, PreTrainedTokenizerFast) and not tok.chat_template
    for system in (None, "Answer briefly."):
        tok.chat_template = training_chat_template(True, system)
        question = "What is 2 + 3?"
        plain = render_prompt(build_char_tokenizer(), question, system)
        assert tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False) == plain
    with_system = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": question}]
    assert tok.apply_chat_template(with_system, tokenize=False) == render_prompt(build_char_tokenizer(), question,
                                                                                 "Be terse.")


def test_bad_exports_are_one_line_errors(exported, tmp_path, capsys):
    run, out, _ = exported
    assert main(["export", run, "--out", out]) == 2  # not empty
    assert main(["export", run, "--out", str(tmp_path / "x"), "--step", "3"]) == 2
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    empty = tmp_path / "empty-run"
    empty.mkdir()
    assert main(["export", str(empty), "--out", str(tmp_path / "z")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4, lines
    assert "exists and is not empty" in lines[0]
    assert "no complete checkpoint at step 3; there are: 2, 4" in lines[1]
    assert "no such run folder" in lines[2]
    assert "no complete checkpoint under" in lines[3]
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "z")


def test_a_damaged_newest_checkpoint_is_skipped_as_resume_skips_it(exports, tmp_path, capsys, caplog):
    """The newest checkpoint's policy weights cut short (shorter than COMPLETE recorded): the export takes the
    previous whole one and says so in one log line (train's resume rule, rl/checkpoint.newest_whole); --step of the
    damaged one is refused, and so is a run with no whole checkpoint left."""
    import logging
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(exports["logprob"][0], run)
    root = os.path.join(run, "checkpoints")
    weights = os.path.join(root, "step_000004", "policy", "model.safetensors")
    size = os.path.getsize(weights)
    with open(weights, "r+b") as f:
        f.truncate(size - 1)
    out = str(tmp_path / "export")
    with caplog.at_level(logging.WARNING, logger="tdrm_rl"):
        assert main(["export", run, "--out", out]) == 0
    assert [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()] == [
        f"skipping damaged checkpoint step_000004 (policy/model.safetensors holds {size - 1} bytes, {size} were "
        f"written) in {root}; using {os.path.join(root, 'step_000002')}"]
    assert capsys.readouterr().out.startswith(f"exported step 2 of {run}: ")
    got = load_file(os.path.join(out, "policy", "model.safetensors"))
    expected = load_file(os.path.join(root, "step_000002", "policy", "model.safetensors"))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
    assert "| 2 (this checkpoint) | 0.5 | 0.25 |" in open(os.path.join(out, "policy", "README.md")).read()

    assert main(["export", run, "--out", str(tmp_path / "x"), "--step", "4"]) == 2
    with open(os.path.join(root, "step_000002", "prm", "model.safetensors"), "r+b") as f:
        f.truncate(10)
    assert main(["export", run, "--out", str(tmp_path / "y")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].endswith(f"{run}: the checkpoint at step 4 is damaged: policy/model.safetensors holds "
                             f"{size - 1} bytes, {size} were written"), lines
    assert lines[1].endswith(f"{run}: no whole checkpoint under {root}, newest: step_000004 "
                             f"(policy/model.safetensors holds {size - 1} bytes, {size} were written)"), lines
    assert len(lines) == 2 and not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")


def test_a_wrapped_question_task_gets_a_template_that_renders_its_training_prompt(tiny_path, tmp_path):
    """A question task (GSM8K rows, '####' answers) on a tokenizer without a chat template: the card's messages
    carry the system prompt the run used, and the added template renders them as load_prompted_task did."""
    from transformers import AutoTokenizer

    from tdrm_rl.models.export import example_prompt
    from tdrm_rl.tasks.prompts import GSM8K_SYSTEM_PROMPT

    rows = tmp_path / "gsm8k.jsonl"
    rows.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"})
                            + "\n" for i in range(1, 5)))
    cfg = load_config(None, ["data.task=jsonl", f"data.path={rows}", "data.eval_size=2", "data.answer_extraction=gsm8k",
                             f"model.policy_path={tiny_path}"])
    example = example_prompt(cfg, tiny_path)
    assert example["needs_template"] and example["messages"][0] == {"role": "system", "content": GSM8K_SYSTEM_PROMPT}
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.chat_template = training_chat_template(True, example["system"])
    assert tok.apply_chat_template(example["messages"], tokenize=False) == example["prompt"]
    assert tok.apply_chat_template(example["messages"][1:], tokenize=False) == example["prompt"]  # system by default
    assert example["messages"][1]["content"] in example["prompt"]
