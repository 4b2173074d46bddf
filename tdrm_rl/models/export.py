"""`tdrm-rl export RUN_DIR --out DIR [--step N]`: a run's policy and PRM as plain Hugging Face folders to share.

    DIR/policy/   an AutoModelForCausalLM folder: config, safetensors, tokenizer, chat template, generation
                  config, README.md (model card: recipe, held-out numbers, how to load it in transformers / vLLM),
                  tdrm_rl_config.yaml (the run's resolved recipe)
    DIR/prm/      the PRM: its backbone as a causal-LM (or token-classification) folder, the value head file of
                  the log-prob read-out, and a model card whose code computes the step values with torch and
                  transformers alone

No optimizer or engine state is copied (it lives in the checkpoint's *_engine folders). The checkpoint is the
newest whole one, by the rule `train`'s resume uses (tdrm_rl.rl.checkpoint.newest_whole: a damaged newer one is
skipped and named in one log line), or the one of `--step`, which must be whole. A tokenizer without a chat
template gets one that renders a question exactly as the policy saw it in training, so chat APIs reproduce the
training prompts.
"""

from __future__ import annotations

import json
import os
import shutil
import types
from typing import Any

from tdrm_rl.models.load import ModelFolderError, prm_checkpoint_readout
from tdrm_rl.rl.checkpoint import checkpoint_problem, checkpoint_root, complete_checkpoints, newest_whole, say_skipped
from tdrm_rl.rl.tracking import read_metrics, read_run_command

# The run's resolved recipe, copied into each exported folder.
CONFIG_FILE = "tdrm_rl_config.yaml"
_ROLES = ("policy", "prm")


class ExportError(ModelFolderError):
    """A run folder that cannot be exported as asked: printed as one line (exit 2)."""


def pick_checkpoint(run_dir: str, step: int | None = None) -> tuple[int, str]:
    """(step, folder) of the newest whole checkpoint of `run_dir` (newer damaged ones are skipped, each named in
    one log line, as `trainer.resume=auto` skips them), or of the one at `step`, refused when it is damaged."""
    if not os.path.isdir(run_dir):
        raise ExportError(f"{run_dir}: no such run folder")
    found = complete_checkpoints(run_dir)
    if not found:
        raise ExportError(f"{run_dir}: no complete checkpoint under {checkpoint_root(run_dir)} (a run "
                          "writes one at its end and every trainer.save_every steps; none with save_every=-1)")
    if step is None:
        path, damaged = newest_whole(run_dir)
        if path is None:
            raise ExportError(f"{run_dir}: no whole checkpoint under {checkpoint_root(run_dir)}, newest: "
                              f"{os.path.basename(damaged[0][0])} ({damaged[0][1]})")
        say_skipped(damaged, path)
        return next(s for s, p in found if p == path), path
    for s, path in found:
        if s == step:
            problem = checkpoint_problem(path)
            if problem:
                raise ExportError(f"{run_dir}: the checkpoint at step {step} is damaged: {problem}")
            return s, path
    raise ExportError(f"{run_dir}: no complete checkpoint at step {step}; there are: "
                      + ", ".join(str(s) for s, _ in found))


def read_run_config(path: str) -> Any:
    """The RunConfig a run saved (config.yaml), typed by the schema but not re-checked: the export machine need
    not have the run's data files, model cache or loggers."""
    from omegaconf import OmegaConf

    from tdrm_rl.config import RunConfig

    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path)))
    except Exception as e:
        raise ExportError(f"{path}: not a config this tdrm-rl can read: {str(e).splitlines()[0]}") from None


# ----- held-out numbers --------------------------------------------------------------------------------------
# eval.json (`tdrm-rl eval`) keys the card shows: accuracies and the pass@k / maj@k / PRM bon@k curves.
EVAL_JSON_METRICS = ("greedy_accuracy", "sampled_accuracy", "pass@k", "maj@k", "bon@k")


def _flat_numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = v
    return out


def eval_numbers(run_dir: str, step: int, ckpt: str) -> dict[str, Any]:
    """What the run measured on held-out problems: the warm start's evaluation (step 0) and the latest one at or
    before `step` (metrics.jsonl), and `tdrm-rl eval`'s eval.json (RUN/eval/, or RUN/) when it measured `ckpt`."""
    rows: list[tuple[int, dict[str, float]]] = []
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(metrics):
        for row in read_metrics(metrics):
            evals = {k[len("eval/"):]: v for k, v in row.items() if k.startswith("eval/") and v is not None}
            if evals and row["step"] <= step:
                rows.append((row["step"], evals))
    found: dict[str, Any] = {"rows": [r for r in rows if r[0] == 0] + ([rows[-1]] if rows and rows[-1][0] else [])}
    for where in (os.path.join(run_dir, "eval", "eval.json"), os.path.join(run_dir, "eval.json")):
        if not os.path.isfile(where):
            continue
        with open(where) as f:
            data = json.load(f)
        measured = data.get("checkpoint") if isinstance(data, dict) else None
        if measured and os.path.abspath(measured) != os.path.abspath(ckpt):
            found["eval_json_other"] = (where, measured)
        elif isinstance(data, dict):
            numbers = _flat_numbers({k: v for k, v in data.items() if k in EVAL_JSON_METRICS})
            found["eval_json"] = (where, numbers, {k: data.get(k) for k in ("task", "problems", "samples",
                                                                            "temperature", "command")})
        break
    return found


# ----- prompts ----------------------------------------------------------------------------------------------
def _jinja_text(text: str) -> str:
    return "{{ " + json.dumps(text) + " }}"


def plain_prompt_parts(system_prompt: str | None) -> tuple[str, str, str, str]:
    """(head, system, middle, tail): render_prompt's plain text (a tokenizer without a chat template) is
    head + system + middle + question + tail, with `system` the run's system prompt."""
    from tdrm_rl.tasks.prompts import render_prompt

    no_template = types.SimpleNamespace(chat_template=None)
    question, marker = "\x00question\x00", "\x00system\x00"
    head, rest = render_prompt(no_template, question, marker).split(marker)
    middle, tail = rest.split(question)
    rendered = render_prompt(no_template, question, system_prompt)
    return head, rendered[len(head):rendered.index(question) - len(middle)], middle, tail


def training_chat_template(needs_template: bool, system_prompt: str | None) -> str:
    """A chat template that renders messages as a tokenizer without one renders training prompts: the arith
    task's own prompt as it is (the last user message), or render_prompt's plain text around the question with
    the run's system prompt (a system message replaces it)."""
    if not needs_template:
        return "{{ (messages | selectattr('role', 'equalto', 'user') | list | last)['content'] }}"
    head, system, middle, tail = plain_prompt_parts(system_prompt)
    return ("{%- set system = messages | selectattr('role', 'equalto', 'system') | list -%}"
            "{%- set user = messages | selectattr('role', 'equalto', 'user') | list -%}"
            + _jinja_text(head) + "{{ system[0]['content'] if system else " + json.dumps(system) + " }}"
            + _jinja_text(middle) + "{{ user[-1]['content'] }}" + _jinja_text(tail))


def example_prompt(cfg: Any, model_dir: str) -> dict[str, Any] | None:
    """One held-out problem as the model in `model_dir` saw it in training (tdrm_rl.tasks.prompts'
    load_prompted_task, every command's prompt path): chat messages, the rendered prompt, the system prompt, the
    worked solution (if the task has one) and the answer. None when the task cannot be built here (its data or
    package is missing)."""
    from tdrm_rl.tasks.prompts import load_prompted_task

    try:
        prompted, _ = load_prompted_task(cfg, model_dir)
        bare, shown = prompted.task.eval_problems(1)[0], prompted.eval_problems(1)[0]
    except Exception:  # noqa: BLE001 - any failure only drops the example from the card
        return None
    needs_template = bool(getattr(prompted.task, "needs_template", False))
    system = prompted.system_prompt
    messages = ([{"role": "system", "content": system}, {"role": "user", "content": bare.prompt}]
                if needs_template else [{"role": "user", "content": bare.prompt}])
    return {"needs_template": needs_template, "messages": messages, "prompt": shown.prompt, "system": system,
            "solution": bare.solution, "answer": bare.answer}


# ----- the export --------------------------------------------------------------------------------------------
def _copy_model_files(src: str, dst: str) -> None:
    """The HF files of a checkpoint role folder: never torch-serialised weights (the checkpoints hold none)."""
    os.makedirs(dst)
    for name in sorted(os.listdir(src)):
        full = os.path.join(src, name)
        if os.path.isfile(full) and not name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")):
            shutil.copy2(full, os.path.join(dst, name))


def _add_chat_template(folder: str, example: dict[str, Any] | None, cfg: Any) -> bool:
    """Give the tokenizer in `folder` the training chat template if it has none. True when one was added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=cfg.model.trust_remote_code)
    if getattr(tokenizer, "chat_template", None) or example is None:
        return False
    tokenizer.chat_template = training_chat_template(example["needs_template"], example["system"])
    tokenizer.save_pretrained(folder)
    return True


def export_run(run_dir: str, out: str, step: int | None = None) -> dict[str, Any]:
    """Write the policy and PRM of a run's checkpoint (newest, or `step`) to out/policy and out/prm. Returns what
    was written: {"step", "checkpoint", "policy", "prm", "prm_readout", "chat_template_added"}."""
    from tdrm_rl.data.atomic import atomic_dir
    from tdrm_rl.models.model_card import policy_card, prm_card

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ExportError(f"--out {out} exists and is not empty; choose a new folder or remove it")
    step, ckpt = pick_checkpoint(run_dir, step)
    for role in _ROLES:
        if not os.path.isfile(os.path.join(ckpt, role, "config.json")):
            raise ExportError(f"{ckpt}: no {role}/ model folder in this checkpoint")
    cfg = read_run_config(os.path.join(ckpt, "config.yaml"))
    # Each role's example in its own tokenizer's template (a PRM with another tokenizer reads its own).
    examples = {role: example_prompt(cfg, os.path.join(ckpt, role)) for role in _ROLES}
    facts = {"run_dir": os.path.abspath(run_dir), "step": step, "cfg": cfg, "command": read_run_command(run_dir),
             "evals": eval_numbers(run_dir, step, ckpt), "out": os.path.abspath(out),
             "checkpoint": os.path.abspath(ckpt)}
    with atomic_dir(out) as tmp:
        added = {}
        for role in _ROLES:
            folder = os.path.join(tmp, role)
            _copy_model_files(os.path.join(ckpt, role), folder)
            shutil.copy2(os.path.join(ckpt, "config.yaml"), os.path.join(folder, CONFIG_FILE))
            added[role] = _add_chat_template(folder, examples[role], cfg)
        readout = prm_checkpoint_readout(os.path.join(tmp, "prm"))
        with open(os.path.join(tmp, "policy", "README.md"), "w") as f:
            f.write(policy_card({**facts, "example": examples["policy"]}, chat_template_added=added["policy"]))
        with open(os.path.join(tmp, "prm", "README.md"), "w") as f:
            f.write(prm_card({**facts, "example": examples["prm"]}, readout))
    return {"step": step, "checkpoint": ckpt, "policy": os.path.join(out, "policy"), "prm": os.path.join(out, "prm"),
            "prm_readout": readout, "chat_template_added": added["policy"]}
