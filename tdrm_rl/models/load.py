"""Model builders and loaders: the embedded tiny Qwen2 policy and the PRM (backbone + scalar head).

The PRM is a `*ForTokenClassification` model with one label, so it saves and loads in plain
HF format; its logit at a step's last token is the value logit of that step prefix.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import (AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer,
                          PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM)
from transformers.utils import logging as hf_logging

from tdrm_rl.config import ModelConfig, is_hub_id
from tdrm_rl.models.packing import forward_logits

# Std of the fresh PRM head: small, so every initial value is ~sigmoid(0) = 0.5.
PRM_HEAD_INIT_STD = 1e-3


def set_cpu_defaults(num_threads: int = 0) -> None:
    """Flush denormals (tiny models run 4-5x slower without it) and optionally pin torch threads."""
    torch.set_flush_denormal(True)
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def build_tiny_policy(tokenizer: PreTrainedTokenizerBase, cfg: ModelConfig, seed: int) -> Qwen2ForCausalLM:
    """A randomly initialised tiny Qwen2 (untied embeddings, float32) sized to `tokenizer`."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        # Untied: vLLM weight reload silently breaks on tied embeddings (see DESIGN).
        tie_word_embeddings=False,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        dtype="float32",
    )
    # Seed only the init, then restore the global RNG so callers' streams are unaffected.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def resolve_model_path(path: str, what: str, hf_cache_dir: str | None = None) -> str:
    """A local checkpoint directory for `path`: the path itself, or a hub id's snapshot in the HF cache.

    Offline (HF_HUB_OFFLINE=1, the default) nothing is downloaded: the model must already be cached.
    """
    if path and os.path.isdir(path):
        return path
    if not is_hub_id(path):
        raise FileNotFoundError(f"{what} checkpoint not found: {path!r} is not a directory")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")
    try:
        return snapshot_download(path, cache_dir=hf_cache_dir, local_files_only=offline, allow_patterns=["*.json", "*.safetensors",
                                                                                 "*.model", "*.txt", "*.jinja"])
    except Exception as e:
        hint = ("download it first (`hf download " + path + "`) or set HF_HUB_OFFLINE=0" if offline
                else "check the repo id and your network")
        raise FileNotFoundError(f"{what} model {path!r} is not a local directory and could not be found in the "
                                f"Hugging Face cache ({type(e).__name__}); {hint}") from None


class ModelFolderError(ValueError):
    """A model path that cannot serve as a checkpoint: a user error, printed as one line (exit 2)."""


# Files a slow tokenizer reads besides tokenizer_config.json (BPE, sentencepiece, WordPiece, tiktoken).
_TOKENIZER_FILES = ("vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.txt",
                    "tokenizer.tiktoken", "qwen.tiktoken")
# torch-serialised weights: loading them can run arbitrary code, so they are refused (safetensors only).
_UNSAFE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_model_folder(path: str, key: str, hf_cache_dir: str | None = None) -> str:
    """The checkpoint folder for `path` (a local folder or a hub id in the offline HF cache), checked to hold
    config.json, a tokenizer (tokenizer.json, or tokenizer_config.json with its vocabulary files) and *.safetensors
    weights. Raises ModelFolderError naming `key`, the path and everything missing, in one line: a hub id not in
    the cache says `hf download`, torch-serialised weights alone (pytorch_model.bin) are refused as such."""
    where = f"{key}={path}"
    if not os.path.isdir(path):
        if not is_hub_id(path):
            raise ModelFolderError(f"{where}: no such folder")
        try:
            folder = resolve_model_path(path, key, hf_cache_dir)
        except FileNotFoundError:
            offline = os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")
            raise ModelFolderError(f"{where}: hub id {path!r} is not in the Hugging Face cache"
                                   + (" (offline: HF_HUB_OFFLINE=1)" if offline else "")
                                   + f"; fetch it first with `hf download {path}`, or give a local folder") from None
        where = f"{where} (cached at {folder})"
    else:
        folder = path
    names = set(os.listdir(folder))
    missing = []
    if "config.json" not in names:
        missing.append("no config.json")
    if "tokenizer.json" not in names:
        if "tokenizer_config.json" not in names:
            missing.append("no tokenizer (tokenizer.json or tokenizer_config.json)")
        elif not names & set(_TOKENIZER_FILES):
            missing.append("tokenizer_config.json but no tokenizer.json and none of its vocabulary files ("
                           + ", ".join(_TOKENIZER_FILES[:3]) + ", ...)")
    if not any(n.endswith(".safetensors") for n in names):
        unsafe = sorted(n for n in names if n.endswith(_UNSAFE_WEIGHTS))
        if unsafe:
            missing.append(f"only torch-serialised weights ({', '.join(unsafe[:3])}), which are refused (loading "
                           "them can run code; safetensors only): convert them to *.safetensors where you trust "
                           "the file, e.g. save_pretrained(..., safe_serialization=True)")
        else:
            missing.append("no *.safetensors weights")
    if missing:
        raise ModelFolderError(f"{where} is not a usable checkpoint folder: " + "; ".join(missing))
    return folder


def _check_checkpoint(path: str, what: str) -> str:
    path = resolve_model_path(path, what)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{what} checkpoint {path!r} is invalid: no config.json in it")
    return path


def _load_tokenizer(path: str, trust_remote_code: bool, what: str) -> PreTrainedTokenizerBase:
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # re-raise with the path: HF messages often omit it
        raise ValueError(f"{what} checkpoint {path!r}: cannot load its tokenizer: {e}") from e
    if tok.pad_token_id is None:
        # Batched generation and training need a pad token; the EOS is the usual stand-in.
        tok.pad_token = tok.eos_token
    return tok


def load_policy(path: str, trust_remote_code: bool = False) -> tuple[Any, PreTrainedTokenizerBase]:
    """Load a causal-LM policy and its tokenizer (float32, safetensors only)."""
    path = _check_checkpoint(path, "policy")
    tok = _load_tokenizer(path, trust_remote_code, "policy")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ValueError(f"policy checkpoint {path!r}: cannot load the model: {e}") from e
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def load_prm(path: str, init_from_policy: bool, trust_remote_code: bool = False) -> tuple[Any, PreTrainedTokenizerBase]:
    """Load a PRM (token-classification model, one label) and its tokenizer.

    With `init_from_policy`, `path` is a causal-LM checkpoint: the backbone comes from it and
    the scalar head is fresh (zero bias, tiny weights, so initial values are ~0.5).
    """
    path = _check_checkpoint(path, "PRM")
    tok = _load_tokenizer(path, trust_remote_code, "PRM")
    verbosity = hf_logging.get_verbosity()
    if init_from_policy:
        # From a policy, "lm_head unexpected / score missing" is the plan, not news: keep the log quiet.
        hf_logging.set_verbosity_error()
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            path, num_labels=1, dtype=torch.float32, use_safetensors=True,
            trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ValueError(f"PRM checkpoint {path!r}: cannot load the model: {e}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    # Dropout off everywhere: TD targets and values must come from the same deterministic net.
    model.config.classifier_dropout = 0.0
    if hasattr(model.config, "attention_dropout"):
        model.config.attention_dropout = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if init_from_policy:
        head = model.score
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            head.weight.normal_(0.0, PRM_HEAD_INIT_STD)
            if head.bias is not None:
                head.bias.zero_()
    return model, tok


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip padding: left-padded prompt + right-padded response both work."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prm_step_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    step_ends: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """PRM logits [B, S] at each step-end token, from ONE forward pass; masked steps give 0."""
    token_logits = forward_logits(model, input_ids, attention_mask, position_ids_from_mask(attention_mask))[..., 0]
    # Clamp so masked (possibly out-of-range) indices still gather safely; they are zeroed below.
    idx = step_ends.long().clamp(0, token_logits.shape[1] - 1)
    logits = torch.gather(token_logits, 1, idx)
    return torch.where(step_mask.bool(), logits, torch.zeros_like(logits))


@torch.no_grad()
def prm_prefix_step_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           step_ends: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """Reference for `prm_step_logits`: every step prefix scored ALONE, unpadded, one forward each.

    This is how per-prefix PRM code scores a trajectory (S forward passes per row); it is the
    ground truth the single pass must match, and the baseline of the scoring benchmark.
    """
    out = torch.zeros(step_ends.shape, dtype=torch.float32, device=input_ids.device)
    for b in range(input_ids.shape[0]):
        real = attention_mask[b].bool()
        columns = real.nonzero().squeeze(-1)
        for k in range(step_ends.shape[1]):
            if not bool(step_mask[b, k]):
                continue
            end = int(step_ends[b, k])
            prefix = input_ids[b, columns[columns <= end]].unsqueeze(0)
            out[b, k] = model(input_ids=prefix, use_cache=False).logits[0, -1, 0].float()
    return out
