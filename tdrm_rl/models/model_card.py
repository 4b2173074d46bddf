"""The README.md model cards of `tdrm-rl export` (tdrm_rl/models/export.py): what was trained and how, the
held-out numbers the run measured, and code that loads the folder with transformers or vLLM alone.

The PRM card's code block is the reference read-out without tdrm-rl: tests/unit/models/test_export.py runs it with
tdrm_rl unimportable and checks its values against tdrm_rl.models.load.prm_step_logits."""

from __future__ import annotations

import json
import os
from typing import Any

# What a step-value read-out computes, in the card's words.
READOUT_FORMULAS = {
    "logprob": "z_t = w . h(e_t) + b + a * min_{response tokens j <= e_t} log p(x_j | x_<j), a = softplus(raw) > 0, "
               "with h the backbone's final hidden states and log p the backbone's own next-token log-probs",
    "hidden": "z_t = w . h(e_t) + b, the one-label token-classification head at the step's last token",
}


def _recipe_line(facts: dict[str, Any]) -> str:
    command = facts["command"]
    if not command or not command.get("recipe"):
        return "not recorded (the run was not started by `tdrm-rl train`); the resolved recipe is tdrm_rl_config.yaml"
    overrides = " ".join(f"`{o}`" for o in command.get("overrides", []))
    return f"`{command['recipe']}`" + (f" with {overrides}" if overrides else "") + " (resolved: tdrm_rl_config.yaml)"


def _setup_rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    cfg = facts["cfg"]
    start = f"`{cfg.model.policy_path}`" if cfg.model.policy_path else "the embedded tiny Qwen2 (`tdrm-rl sft`)"
    prm = cfg.prm
    td = (f"TD(lambda) (gamma={prm.gamma}, lambda={prm.lam})" if prm.td_mode == "lambda"
          else f"{prm.n_step}-step TD (gamma={prm.gamma})")
    rw = cfg.reward
    reward = (f"dense PRM step rewards ({rw.dense})" if rw.dense != "none" else
              f"{rw.w_rule} x verifiable + {rw.w_prm} x PRM ({rw.prm_aggregate})")
    return [("recipe", _recipe_line(facts)), ("start", start), ("task", f"`{cfg.data.task}`"),
            ("algorithm", f"`{cfg.algorithm.estimator}`, reward = {reward}, KL coef {cfg.policy.kl_coef}"),
            ("PRM", f"update `{prm.update}` by {td}, read-out `{prm.readout}`"),
            ("checkpoint", f"step {facts['step']} of {cfg.trainer.total_steps}: `{facts['checkpoint']}`")]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def eval_section(facts: dict[str, Any]) -> str:
    """The held-out numbers: metrics.jsonl's warm start and latest evaluation, and eval.json's numbers."""
    evals, cfg = facts["evals"], facts["cfg"]
    parts = []
    if evals["rows"]:
        keys = sorted({k for _, e in evals["rows"] for k in e})
        rows = [[f"{s}" + (" (warm start)" if s == 0 else "") + (" (this checkpoint)" if s == facts["step"] else "")]
                + [f"{e[k]:.4g}" if k in e else "" for k in keys] for s, e in evals["rows"]]
        parts.append(f"During training, on {cfg.data.eval_size} held-out problems (metrics.jsonl):\n\n"
                     + _table(["RL step"] + keys, rows))
    else:
        parts.append("The run logged no held-out evaluation at or before this step.")
    if "eval_json" in evals:
        where, numbers, about = evals["eval_json"]
        if numbers:
            on = ", ".join(f"{k} {about[k]}" for k in ("task", "problems", "samples", "temperature")
                           if about.get(k) is not None)
            parts.append(f"`tdrm-rl eval` of this checkpoint ({where}" + (f"; {on}" if on else "") + "):\n\n"
                         + _table(["metric", "value"], [[k, f"{v:.4g}"] for k, v in sorted(numbers.items())])
                         + (f"\n\nReproduce: `{about['command']}`" if about.get("command") else ""))
    elif "eval_json_other" in evals:
        where, measured = evals["eval_json_other"]
        parts.append(f"({where} measured another checkpoint, `{measured}`: not shown.)")
    return "\n\n".join(parts)


def _front_matter(tags: list[str], pipeline: str | None) -> str:
    lines = ["---", "library_name: transformers"] + ([f"pipeline_tag: {pipeline}"] if pipeline else [])
    return "\n".join(lines + ["tags:"] + [f"- {t}" for t in tags] + ["---", ""])


def policy_card(facts: dict[str, Any], chat_template_added: bool) -> str:
    cfg, example = facts["cfg"], facts["example"]
    name = os.path.basename(facts["run_dir"].rstrip("/"))
    path = os.path.join(facts["out"], "policy")
    messages = json.dumps(example["messages"] if example else [{"role": "user", "content": "..."}], ensure_ascii=False)
    max_tokens = cfg.rollout.max_new_tokens
    text = [_front_matter(["tdrm-rl", "reinforcement-learning", cfg.algorithm.estimator, "process-reward-model"],
                          "text-generation"),
            f"# {name}: policy after RL step {facts['step']}\n",
            "A causal language model trained by tdrm-rl: online RL whose critic is a process reward model trained "
            "with temporal-difference targets (TDRM, arXiv:2509.15110). This is a plain `AutoModelForCausalLM` "
            "folder (safetensors, tokenizer, chat template); nothing of tdrm-rl is needed to run it. Its PRM is "
            "exported beside it (`../prm`).\n",
            _table(["", ""], [[k, v] for k, v in _setup_rows(facts)]) + "\n",
            "## Held-out evaluation\n", eval_section(facts) + "\n",
            "## Use\n",
            "transformers:\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"tok = AutoTokenizer.from_pretrained({path!r})\nmodel = AutoModelForCausalLM.from_pretrained({path!r})\n"
            f"messages = {messages}\n"
            "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
            "return_dict=True)\n"
            f"out = model.generate(**ids, max_new_tokens={max_tokens}, do_sample=False)\n"
            "print(tok.decode(out[0, ids[\"input_ids\"].shape[1]:], skip_special_tokens=True))\n```\n",
            "vLLM:\n\n```python\nfrom vllm import LLM, SamplingParams\n\n"
            f"llm = LLM(model={path!r})\n"
            f"out = llm.chat({messages}, SamplingParams(temperature=0, max_tokens={max_tokens}))\n"
            "print(out[0].outputs[0].text)\n```\n"]
    if example:
        text.append("## Prompt format\n")
        text.append("The chat template renders these messages as the policy saw its prompts in training"
                    + (" (the tokenizer had no chat template, so the export added one that does exactly that)"
                       if chat_template_added else "") + ":\n\n```text\n" + example["prompt"] + "\n```\n")
        if example["solution"]:
            text.append(f"A worked solution in the trained format (steps separated by {cfg.data.step_delimiter!r}):"
                        f"\n\n```text\n{example['solution']}\n```\n")
    text.append("Weights are stored as trained (float32 on CPU runs); `tdrm_rl_config.yaml` is the run's resolved "
                "recipe.\n")
    return "\n".join(text)


_PRM_SNIPPET_HEAD = '''import torch
from transformers import {auto_class}, AutoTokenizer
{extra_import}
PRM = {path!r}
DELIMITER = {delimiter!r}
tok = AutoTokenizer.from_pretrained(PRM)
{load_model}
plain, full = tok("a", add_special_tokens=False)["input_ids"], tok("a")["input_ids"]
BOS = full[:next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)]  # what tok puts in front


def step_ends(response_ids):
    """Index (into the response) of each step's last token: the token holding a delimiter's last character, and
    for the final step its last non-blank token."""
    pieces = ["" if i in tok.all_special_ids else tok.decode([i]) for i in response_ids]
    text, char_ends, ends, start = "".join(pieces), [], [], 0
    for piece in pieces:
        char_ends.append((char_ends[-1] if char_ends else 0) + len(piece))
    while (hit := text.find(DELIMITER, start)) != -1:
        if text[start:hit].strip():
            ends.append(next(t for t, end in enumerate(char_ends) if end > hit + len(DELIMITER) - 1))
        start = hit + len(DELIMITER)
    if text[start:].strip():
        ends.append(max(t for t, piece in enumerate(pieces) if piece.strip()))
    return ends


@torch.no_grad()
def step_values(prompt, response):
    """V(s_t) in (0, 1) after each step of `response` to `prompt`, all from one forward pass."""
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    p_ids = p_ids if p_ids[:len(BOS)] == BOS else BOS + p_ids
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
'''

_PRM_SNIPPET_BODY = {
    "logprob": '''    hidden = lm.base_model(input_ids=ids).last_hidden_state[0]  # [L, H], after the final norm
    logp = lm.get_output_embeddings()(hidden).float().log_softmax(-1)[:-1].gather(-1, ids[0, 1:, None])[:, 0]
    response_logp = logp[len(p_ids) - 1:]  # log p(x_j | x_<j) of each response token
    a = torch.nn.functional.softplus(head["logprob_scale_raw"])
    z = (hidden[len(p_ids):] @ head["score.weight"][0] + head["score.bias"]
         + a * torch.cummin(response_logp, 0).values)
''',
    "hidden": '''    z = model(input_ids=ids).logits[0, len(p_ids):, 0]
''',
}

_PRM_LOAD = {
    "logprob": ("AutoModelForCausalLM", "from safetensors.torch import load_file\n",
                'lm = AutoModelForCausalLM.from_pretrained(PRM, dtype=torch.float32).eval()\n'
                'head = load_file(f"{PRM}/value_head.safetensors")  # score.weight [1, H], score.bias [1], '
                'logprob_scale_raw [1]'),
    "hidden": ("AutoModelForTokenClassification", "",
               "model = AutoModelForTokenClassification.from_pretrained(PRM, dtype=torch.float32).eval()"),
}


def prm_snippet(path: str, readout: str, delimiter: str, prompt: str, response: str) -> str:
    """Standalone code (torch, transformers, safetensors) that prints the PRM's step values of one example."""
    auto_class, extra_import, load_model = _PRM_LOAD[readout]
    head = _PRM_SNIPPET_HEAD.format(auto_class=auto_class, extra_import=extra_import, path=path,
                                    delimiter=delimiter, load_model=load_model)
    return (head + _PRM_SNIPPET_BODY[readout] + "    return torch.sigmoid(z[step_ends(r_ids)]).tolist()\n\n\n"
            f"PROMPT = {prompt!r}\nRESPONSE = {response!r}\nprint(step_values(PROMPT, RESPONSE))\n")


def prm_card(facts: dict[str, Any], readout: str) -> str:
    cfg, example = facts["cfg"], facts["example"]
    name = os.path.basename(facts["run_dir"].rstrip("/"))
    delimiter = cfg.data.step_delimiter
    prompt = example["prompt"] if example else "Problem: ...\n"
    response = (example["solution"] or f"...{delimiter}\\boxed{{{example['answer']}}}") if example else \
        f"step one{delimiter}step two{delimiter}\\boxed{{42}}"
    load_as = ("`AutoModelForCausalLM` loads this folder, but that is only the PRM's backbone language model: the "
               "values also need `value_head.safetensors` (w, b and the log-prob weight a)" if readout == "logprob"
               else "it is a one-label `AutoModelForTokenClassification` folder")
    text = [_front_matter(["tdrm-rl", "process-reward-model", "temporal-difference"], None),
            f"# {name}: process reward model after RL step {facts['step']}\n",
            "A process reward model (PRM) trained online by tdrm-rl with temporal-difference targets (TDRM, "
            "arXiv:2509.15110). For a prompt and a response split into steps at "
            f"{delimiter!r}, it gives V(s_t) in (0, 1) for every step prefix: its estimate that the response ends "
            "with the right answer, all steps from one forward pass.\n",
            _table(["", ""], [[k, v] for k, v in _setup_rows(facts)]) + "\n",
            f"## Read-out: `{readout}`\n",
            f"V(s_t) = sigmoid(z_t) at the step's last token e_t, with {READOUT_FORMULAS[readout]}. "
            f"Loading: {load_as}. This code computes the values with torch, transformers and safetensors alone "
            "(no tdrm-rl):\n",
            "```python\n" + prm_snippet(os.path.join(facts["out"], "prm"), readout, delimiter, prompt, response)
            + "```\n",
            "With tdrm-rl installed: `model, tok = tdrm_rl.models.load.load_prm(PATH, init_from_policy=False)`, then "
            "`tdrm_rl.models.load.prm_step_logits` on a collated batch; `tdrm-rl bon` and `tdrm-rl search` take it "
            "as their PRM.\n",
            "## Held-out evaluation of the policy it trained with\n", eval_section(facts) + "\n"]
    return "\n".join(text)
