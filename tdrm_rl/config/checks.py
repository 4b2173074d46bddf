"""One validator for a RunConfig: every field's declared bounds (schema.knob), then the rules that tie
fields together. Each error names the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Sequence

from tdrm_rl.config.schema import RunConfig

__all__ = ["ConfigError", "validate", "field_bounds", "choices_of", "layout_gpus", "is_hub_id", "is_model_alias"]


class ConfigError(ValueError):
    """A user mistake in a recipe or an override. The message names the key and the file."""


def field_bounds(cfg: RunConfig | None = None) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(section.key, value, bounds) for every field of every section (value from `cfg`, else the default)."""
    cfg = cfg or RunConfig()
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        for f in dataclasses.fields(part):
            yield f"{section.name}.{f.name}", getattr(part, f.name), dict(f.metadata.get("bounds", {}))


def choices_of(dotted: str) -> Sequence[Any]:
    """The allowed values of a choice field, e.g. choices_of('prm.shaping')."""
    for key, _, bounds in field_bounds():
        if key == dotted:
            choices = bounds["choices"]
            return tuple(choices() if callable(choices) else choices)
    raise KeyError(dotted)


def _bound_problem(value: Any, bounds: dict[str, Any]) -> str | None:
    """What is wrong with `value` under `bounds`, or None."""
    if value is None:  # an Optional field left unset
        return None
    if "choices" in bounds:
        allowed = bounds["choices"]() if callable(bounds["choices"]) else bounds["choices"]
        if isinstance(value, (list, tuple)):  # a list field: every entry is one of the choices, once
            bad = [v for v in value if v not in allowed]
            if bad or len(set(value)) != len(value):
                return f"each entry must be one of {list(allowed)}, once" + (f"; {bad[0]!r} is not" if bad else "")
            return None
        probe = value.split(bounds["family_sep"], 1)[0] if bounds.get("family_sep") and isinstance(value, str) \
            else value
        if probe not in allowed:
            return f"expected one of {list(allowed)}"
    for op, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                         ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        if op in bounds and not ok(value, bounds[op]):
            lo = [f"{w} {bounds[o]}" for o, w in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if o in bounds]
            return "must be " + " and ".join(lo)
    if bounds.get("nonempty") and not str(value):
        return "must not be empty"
    if "chars" in bounds and (not value or set(value) - set(bounds["chars"])):
        return f"use a non-empty subset of {bounds['chars']!r}"
    return None


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Declared bounds of every field, then the cross-field rules."""
    for key, value, bounds in field_bounds(cfg):
        problem = _bound_problem(value, bounds)
        if problem:
            raise ConfigError(f"{source}: key '{key}' = {value!r}; {problem}")
    _validate_rules(cfg, source)
    _validate_layout(cfg, source)
    _validate_paths(cfg, source)


def _validate_rules(cfg: RunConfig, source: str) -> None:
    from tdrm_rl.algos import estimator_needs_groups

    if cfg.rollout.group_size < 2 and estimator_needs_groups(cfg.algorithm.estimator):
        raise ConfigError(f"{source}: key 'rollout.group_size' must be >= 2 for {cfg.algorithm.estimator}")
    if cfg.policy.dual_clip and cfg.policy.dual_clip <= 1.0:
        raise ConfigError(f"{source}: key 'policy.dual_clip' = {cfg.policy.dual_clip}; use 0 (off) or a value > 1")
    if cfg.algorithm.dynamic_sampling and cfg.rollout.group_size < 2:
        raise ConfigError(f"{source}: key 'algorithm.dynamic_sampling' needs rollout.group_size >= 2")
    if cfg.trainer.async_rollout and cfg.algorithm.dynamic_sampling:
        raise ConfigError(f"{source}: keys 'trainer.async_rollout' and 'algorithm.dynamic_sampling' cannot both be on "
                          "(dynamic sampling decides the next rollout from this one's rewards)")
    if cfg.prm.bootstrap == "ema" and cfg.prm.zero_stage == 3:
        raise ConfigError(f"{source}: key 'prm.bootstrap' = 'ema' cannot be used with prm.zero_stage=3 (the EMA target "
                          "is a deep copy of the module, and ZeRO-3 partitions its parameters across ranks); use "
                          "prm.bootstrap=online or prm.zero_stage <= 2")
    rows = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    for role, ranks in (("policy", cfg.policy.world_size * cfg.policy.mini_batches), ("prm", cfg.prm.world_size)):
        if rows < ranks:
            what = ("policy.world_size x policy.mini_batches" if role == "policy" else "prm.world_size")
            raise ConfigError(f"{source}: keys 'rollout.prompts_per_step' x 'rollout.group_size' = {rows} rows per "
                              f"step, fewer than {what} = {ranks}: every {role} rank needs a row in every mini-batch")
    if "jsonl" not in cfg.trainer.loggers:
        raise ConfigError(f"{source}: key 'trainer.loggers' = {cfg.trainer.loggers!r}; must include 'jsonl' "
                          "(metrics.jsonl is the run's record: resume, summary.json and `tdrm-rl export` read it)")
    if "wandb" in cfg.trainer.loggers:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(f"{source}: key 'trainer.loggers' includes 'wandb', which is not installed: "
                              "pip install 'tdrm-rl[wandb]' (or drop wandb from trainer.loggers)")
    family, _, name = cfg.data.task.partition(":")
    if family == "reasoning_gym" and not name:
        raise ConfigError(f"{source}: key 'data.task' = {cfg.data.task!r}; name a dataset, e.g. "
                          "reasoning_gym:gsm_symbolic")
    if family != "reasoning_gym" and name:
        raise ConfigError(f"{source}: key 'data.task' = {cfg.data.task!r}; only reasoning_gym takes ':<name>'")
    if family in ("jsonl", "parquet") and not cfg.data.path:
        raise ConfigError(f"{source}: key 'data.path' must name a .{family} file when data.task={family}")
    if cfg.model.policy_path is None and cfg.data.task != "arith":
        raise ConfigError(f"{source}: key 'model.policy_path' is null, which means the embedded tiny model, "
                          f"warm-started on the arith task only; data.task={cfg.data.task!r} needs a real model "
                          "(e.g. model.policy_path=smollm2-135m)")


def _validate_paths(cfg: RunConfig, source: str) -> None:
    for key in ("path", "eval_path"):
        path = getattr(cfg.data, key)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{source}: key 'data.{key}' names a missing file: {path}")
    for key, path in (("model.policy_path", cfg.model.policy_path), ("model.prm_path", cfg.model.prm_path)):
        if path is not None and not os.path.exists(path) and not is_hub_id(path) and not is_model_alias(path):
            raise ConfigError(f"{source}: key '{key}' names a missing path: {path}")
    resume = cfg.trainer.resume
    if resume not in ("auto", "none") and not os.path.isdir(resume):
        raise ConfigError(f"{source}: key 'trainer.resume' = {resume!r}; expected auto, none or a checkpoint directory")


def _validate_layout(cfg: RunConfig, source: str) -> None:
    """Rollout backend, weight sync and GPU layout: combinations that cannot work are errors."""
    rc, cc = cfg.rollout, cfg.cluster
    if rc.backend == "hf" and rc.weight_sync not in ("auto", "inprocess"):
        raise ConfigError(f"{source}: key 'rollout.weight_sync' = {rc.weight_sync!r} needs rollout.backend=vllm; "
                          f"the hf backend loads weights in process")
    if rc.backend == "vllm" and rc.weight_sync == "inprocess":
        raise ConfigError(f"{source}: key 'rollout.weight_sync' = 'inprocess' is for rollout.backend=hf; "
                          f"use reload, nccl or ipc with vllm")
    if rc.weight_sync == "ipc" and not cc.colocate:
        raise ConfigError(f"{source}: key 'rollout.weight_sync' = 'ipc' needs cluster.colocate=true "
                          f"(CUDA IPC shares memory on one GPU)")
    if cc.colocate and cfg.trainer.async_rollout:
        raise ConfigError(f"{source}: keys 'cluster.colocate' and 'trainer.async_rollout' cannot both be on (async "
                          f"rollout generates the next step while the trainers train, on the GPUs they share)")
    if cc.colocate and rc.weight_sync == "nccl":
        raise ConfigError(f"{source}: key 'rollout.weight_sync' = 'nccl' cannot be used with cluster.colocate=true "
                          f"(NCCL refuses two ranks of one group on the same GPU); use ipc or auto")
    if rc.enable_sleep_mode and rc.backend != "vllm":
        raise ConfigError(f"{source}: key 'rollout.enable_sleep_mode' needs rollout.backend=vllm")
    if rc.tensor_parallel_size > 1 and rc.backend != "vllm":
        raise ConfigError(f"{source}: key 'rollout.tensor_parallel_size' > 1 needs rollout.backend=vllm")
    if rc.tensor_parallel_size > 1 and cc.colocate:
        raise ConfigError(f"{source}: key 'rollout.tensor_parallel_size' > 1 is not supported with "
                          f"cluster.colocate=true (a colocated engine shares one GPU with the trainer ranks)")
    if cc.gpus_per_node and rc.tensor_parallel_size > cc.gpus_per_node:
        raise ConfigError(f"{source}: key 'rollout.tensor_parallel_size' = {rc.tensor_parallel_size} exceeds "
                          f"cluster.gpus_per_node = {cc.gpus_per_node} (an engine's TP ranks stay on one node)")
    if cc.num_gpus and layout_gpus(cfg) != cc.num_gpus:
        raise ConfigError(f"{source}: key 'cluster.num_gpus' = {cc.num_gpus}, but the role layout uses "
                          f"{layout_gpus(cfg)} GPUs (rollout.num_workers x rollout.tensor_parallel_size + "
                          f"policy.world_size + prm.world_size, or their max with cluster.colocate)")


def layout_gpus(cfg: RunConfig) -> int:
    """GPUs the role layout occupies: separate roles add up; colocated roles share the largest group's GPUs."""
    rollout = cfg.rollout.num_workers * cfg.rollout.tensor_parallel_size
    groups = (rollout, cfg.policy.world_size, cfg.prm.world_size)
    return max(groups) if cfg.cluster.colocate else sum(groups)


HUB_ID_PATTERN = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"


def is_hub_id(path: str) -> bool:
    """`owner/name` that is not a local path: a Hugging Face repo id, resolved through the local HF cache."""
    import re

    return bool(path) and not os.path.exists(path) and re.match(HUB_ID_PATTERN, path) is not None


def is_model_alias(name: str) -> bool:
    """A model name `tdrm-rl models fetch` knows (e.g. smollm2-135m), resolved from its cache at run time."""
    from tdrm_rl.models.zoo import MODELS

    return name in MODELS
