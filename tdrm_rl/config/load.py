"""Recipes in: YAML files that may `extends:` another, then `key=value` overrides, typed by the schema."""

from __future__ import annotations

import logging
import os
from typing import Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tdrm_rl.config.checks import ConfigError, validate
from tdrm_rl.config.schema import RunConfig

EXTENDS_KEY = "extends"


def _read_recipe(path: str, seen: tuple[str, ...] = ()) -> DictConfig:
    """Read one YAML recipe, resolving `extends:` (a path relative to the recipe) first."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"recipe file not found: {path}")
    if path in seen:
        raise ConfigError(f"recipe {path}: 'extends' forms a cycle")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path}: top level must be a mapping of sections")
    parent = raw.pop(EXTENDS_KEY, None)
    node = OmegaConf.create(raw)
    if parent is None:
        return node
    parent_path = os.path.join(os.path.dirname(path), str(parent))
    if not os.path.isfile(parent_path):
        raise ConfigError(f"recipe {path}: key 'extends' names a missing file: {parent_path}")
    return OmegaConf.merge(_read_recipe(parent_path, seen + (path,)), node)


def _merge(schema: DictConfig, node: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, node)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        reason = str(e).splitlines()[0]
        raise ConfigError(f"{source}: bad key '{key}': {reason}") from None


def load_config(recipe: Optional[str] = None, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Build the run config: defaults <- recipe (with extends) <- `key=value` overrides, then validate it."""
    cfg = OmegaConf.structured(RunConfig)
    if recipe is not None:
        cfg = _merge(cfg, _read_recipe(recipe), f"recipe {recipe}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            dotlist = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise ConfigError(f"override '{item}': {str(e).splitlines()[0]}") from None
        cfg = _merge(cfg, dotlist, f"override '{item}'")
    run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    _apply_renamed_keys(run)
    validate(run, source=f"recipe {recipe}" if recipe else "config")
    return run


def _apply_renamed_keys(run: RunConfig) -> None:
    """Old key names still work for a release, with a warning: trainer.tensorboard -> trainer.loggers."""
    tc = run.trainer
    if tc.tensorboard is not None:
        logging.getLogger("tdrm_rl").warning("trainer.tensorboard is deprecated: use trainer.loggers (e.g. "
                                             "trainer.loggers=[jsonl] for no TensorBoard)")
        tc.loggers = [n for n in tc.loggers if n != "tensorboard"] + (["tensorboard"] if tc.tensorboard else [])
        tc.tensorboard = None


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
