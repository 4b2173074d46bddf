"""Every numeric and choice field of every section declares its bounds next to its default, and a value outside
them is a config error naming the key, the value and what is allowed (before anything starts)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from tdrm_rl.config import ConfigError, RunConfig, field_bounds, load_config, validate

# Free text: paths, names, prompts; checked elsewhere (files exist, hub ids, the tokenizer) or not at all.
FREE_TEXT = {"data.path", "data.eval_path", "data.prompt_key", "data.answer_key", "data.system_prompt",
             "model.policy_path", "model.prm_path", "trainer.resume", "cluster.address"}


def field_types() -> dict[str, typing.Any]:
    hints = {}
    for section in dataclasses.fields(RunConfig):
        cls = typing.get_type_hints(RunConfig)[section.name]
        for name, hint in typing.get_type_hints(cls).items():
            hints[f"{section.name}.{name}"] = hint
    return hints


def base_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def out_of_bounds(bounds: dict, hint) -> list:
    """Values just outside each declared bound."""
    kind = base_type(hint)
    step = 1 if kind is int else 1e-3
    values = []
    if "choices" in bounds:
        values.append(-7 if kind is int else "no-such-choice")
    for op, delta in (("ge", -step), ("gt", 0), ("le", step), ("lt", 0)):
        if op in bounds:
            values.append(kind(bounds[op] + delta))
    if bounds.get("nonempty"):
        values.append("")
    if "chars" in bounds:
        values += ["", "/"]
    return values


CASES = [(key, value) for key, _, bounds in field_bounds() for value in out_of_bounds(bounds, field_types()[key])]


def test_every_numeric_and_choice_field_declares_its_bounds():
    hints = field_types()
    unbounded = []
    for key, _, bounds in field_bounds():
        kind = base_type(hints[key])
        if kind is bool or typing.get_origin(kind) is dict:
            continue
        if kind in (int, float) and not {"ge", "gt", "le", "lt", "choices"} & set(bounds):
            unbounded.append(key)
        if kind is str and not bounds and key not in FREE_TEXT:
            unbounded.append(key)
    assert not unbounded, f"fields without declared bounds: {unbounded}"
    assert len(CASES) > 100


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v!r}" for k, v in CASES])
def test_a_value_outside_the_bounds_is_an_error_naming_the_key(key, value):
    cfg = RunConfig()
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError) as err:
        validate(cfg, source="test")
    assert f"key '{key}' = {value!r}" in str(err.value)


def test_the_defaults_and_values_on_the_bounds_are_accepted():
    validate(RunConfig())
    cfg = load_config(None, ["rollout.temperature=0", "rollout.top_p=1", "trainer.save_every=-1", "prm.gamma=1",
                             "data.task=reasoning_gym:gsm_symbolic", "model.policy_path=Qwen/Qwen2.5-0.5B-Instruct"])
    assert cfg.rollout.temperature == 0 and cfg.prm.gamma == 1


def test_an_override_out_of_range_names_key_value_and_range():
    with pytest.raises(ConfigError, match=r"key 'rollout.temperature' = -1.0; must be >= 0"):
        load_config(None, ["rollout.temperature=-1"])
    with pytest.raises(ConfigError, match=r"key 'prm.update' = 'sometimes'; expected one of \['online'"):
        load_config(None, ["prm.update=sometimes"])
