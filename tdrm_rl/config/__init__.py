"""Run configuration: typed sections (schema.py: each field's default and bounds), YAML recipes that may extend
each other plus CLI overrides (load.py), and one validator (checks.py). Unknown keys, wrong types and values out
of range are errors that name the key and the recipe file."""

from tdrm_rl.config.checks import (ConfigError, choices_of, field_bounds, is_hub_id, is_model_alias, layout_gpus,
                                   validate)
from tdrm_rl.config.load import load_config, to_yaml
from tdrm_rl.config.schema import (AlgorithmConfig, ClusterConfig, DataConfig, ModelConfig, PolicyConfig, PRMConfig,
                                   RewardConfig, RolloutConfig, RunConfig, SFTConfig, TrainerConfig, knob)

__all__ = [
    "AlgorithmConfig", "ClusterConfig", "ConfigError", "DataConfig", "ModelConfig", "PolicyConfig", "PRMConfig",
    "RewardConfig", "RolloutConfig", "RunConfig", "SFTConfig", "TrainerConfig", "choices_of", "field_bounds",
    "is_hub_id", "is_model_alias", "knob", "layout_gpus", "load_config", "to_yaml", "validate",
]
