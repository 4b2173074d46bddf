"""A model's architecture numbers, read from its config.json (offline), and what follows from them: parameter
count, KV-cache bytes per token, the largest single tensor.

Where config.json comes from, in order: a local checkpoint folder; the Hugging Face cache (a hub id someone
downloaded, `hf download REPO`); the copy bundled under `tdrm_rl/sizing/model_configs/` for the recipe families
(architecture fields only, a few hundred bytes each); for `model.policy_path: null`, the embedded tiny model's
`model.*` fields. `ModelShape.source` says which one was used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tdrm_rl.config import ConfigError, RunConfig, is_hub_id, is_model_alias

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")
# model_type -> (q/k/v carry a bias, o_proj carries a bias, RMSNorms per decoder layer). GLM-4 has a norm after
# attention and after the MLP too (sandwich norms); its biases follow config.attention_bias, Qwen2's are fixed.
ARCHITECTURES = {"qwen2": ("fixed", False, 2), "glm4": ("config", False, 4), "llama": ("config", "config", 2),
                 "mistral": ("config", "config", 2)}


class ShapeError(ConfigError):
    """No usable config.json for a model: the message names the model and where it looked."""


@dataclass(frozen=True)
class ModelShape:
    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    max_positions: int
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    norms_per_layer: int
    dtype_bytes: int  # the checkpoint's dtype (vLLM's dtype=auto): 2 for bf16 / fp16, 4 for float32
    source: str

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> int:
        """One decoder layer: q, k, v, o projections, the gated MLP (gate, up, down) and its RMSNorms."""
        h = self.hidden
        attention = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        attention += (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + h * self.o_bias
        mlp = 3 * h * self.intermediate + (2 * self.intermediate + h) * self.mlp_bias
        return attention + mlp + self.norms_per_layer * h

    def params(self) -> int:
        """Every parameter: embeddings, layers, final norm, and the LM head unless tied to the embeddings."""
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    def largest_tensor(self) -> int:
        """Elements of the largest single parameter (the embedding matrix, or an MLP projection)."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """vLLM's KV cache: a key and a value vector per layer and KV head."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


def shape_from_config(config: dict, name: str, source: str) -> ModelShape:
    """A ModelShape from a config.json dict; unknown architectures are a ShapeError naming the known ones."""
    model_type = config.get("model_type", "")
    if model_type not in ARCHITECTURES:
        raise ShapeError(f"{name}: model_type {model_type!r} ({source}) is not one `tdrm-rl plan` can size; it knows "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    qkv, o, norms = ARCHITECTURES[model_type]
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        return ModelShape(
            name=name, model_type=model_type, hidden=hidden, layers=int(config["num_hidden_layers"]), heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads), intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]), tied=bool(config.get("tie_word_embeddings", False)),
            max_positions=int(config.get("max_position_embeddings", 0)),
            qkv_bias=True if qkv == "fixed" else bool(config.get("attention_bias", False)),
            o_bias=bool(config.get("attention_bias", False)) if o == "config" else False,
            mlp_bias=bool(config.get("mlp_bias", False)), norms_per_layer=norms,
            dtype_bytes=4 if "float32" in dtype else 2, source=source)
    except (KeyError, TypeError, ValueError) as e:
        raise ShapeError(f"{name}: config.json ({source}) lacks a usable {e} field") from None


def bundled_path(name: str) -> str:
    """The bundled copy of `name`'s config.json: `owner/repo` is stored as `owner--repo.json`."""
    return os.path.join(BUNDLED_DIR, name.replace("/", "--") + ".json")


def _hf_cache_config(repo_id: str) -> str | None:
    """config.json of `repo_id` in the local Hugging Face cache, if someone downloaded it (never a download)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return found if isinstance(found, str) and os.path.isfile(found) else None


def locate_config(path: str, cache_dir: str) -> tuple[str, str]:
    """(config.json path, a phrase naming where it came from) for a model path, hub id or model name."""
    if os.path.isdir(path):
        candidate = os.path.join(path, "config.json")
        if os.path.isfile(candidate):
            return candidate, f"local folder {path}"
        raise ShapeError(f"{path}: the model folder has no config.json")
    if is_model_alias(path):
        from tdrm_rl.models.zoo import cache_path

        converted = os.path.join(cache_path(path, cache_dir), "config.json")
        if os.path.isfile(converted):
            return converted, f"converted checkpoint {os.path.dirname(converted)}"
    elif is_hub_id(path):
        cached = _hf_cache_config(path)
        if cached:
            return cached, f"HF cache {cached}"
    if os.path.isfile(bundled_path(path)):
        return bundled_path(path), f"bundled copy {os.path.relpath(bundled_path(path), os.getcwd())}"
    raise ShapeError(f"{path}: no config.json found: not a local folder, not in the Hugging Face cache "
                     f"(`hf download {path} config.json` fetches the few kB `tdrm-rl plan` needs), and no bundled "
                     f"copy in {BUNDLED_DIR}")


def embedded_shape(cfg: RunConfig) -> ModelShape:
    """The embedded tiny Qwen2 (`model.policy_path: null`): its model.* fields and the char tokenizer's vocabulary."""
    from tdrm_rl.models.tokenizer import build_char_tokenizer

    m = cfg.model
    config = {"model_type": "qwen2", "hidden_size": m.hidden_size, "num_hidden_layers": m.num_layers,
              "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_kv_heads,
              "intermediate_size": m.intermediate_size, "vocab_size": len(build_char_tokenizer()),
              "max_position_embeddings": m.max_position_embeddings, "tie_word_embeddings": False,
              "torch_dtype": "float32"}
    return shape_from_config(config, "embedded tiny Qwen2", "model.* fields of the recipe")


def model_shape(cfg: RunConfig, path: str | None) -> ModelShape:
    """The shape of the model at `path` (a policy or PRM path; None = the embedded tiny model)."""
    if path is None:
        return embedded_shape(cfg)
    config_path, source = locate_config(path, cfg.model.cache_dir)
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ShapeError(f"{path}: cannot read {config_path}: {e}") from None
    return shape_from_config(config, path, source)
