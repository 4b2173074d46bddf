"""Model builders and loaders: the embedded tiny Qwen2 policy and the PRM (backbone + scalar head).

Two PRM read-outs (`prm.readout`):

    hidden   a `*ForTokenClassification` model with one label (plain HF format); the value logit of a
             step prefix is the head at the step's last token: z_t = w . h(e_t) + b.
    logprob  (default) the causal LM is kept whole (its LM head too) and the value logit adds the lowest
             log-prob, under the PRM's own LM, of any response token so far:
                 z_t = w . h(e_t) + b + a * min_{response tokens j <= e_t} log p(x_j | x_<j),   a > 0.
             Why: an arithmetic slip is a token the backbone itself finds unlikely ("8-4=" predicts "4"; the
             text says "5"), but that mismatch lives BETWEEN two positions (the prediction at j-1 and the
             token at j). The hidden state at the step end never has to represent it (a language model gains
             nothing from remembering that an earlier token was surprising), so a head on h(e_t) cannot read
             it, and BCE even on exact step labels stalled at 0.79 step AUC. The log-prob term hands the
             head that comparison; every objective (TD, TD(lambda), MC labels, ORM, exact labels) and
             online RL train the same network, backbone, LM head, w, b and a alike.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import (AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer,
                          PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM)
from transformers.utils import logging as hf_logging

from tdrm_rl.config import ModelConfig, is_hub_id
from tdrm_rl.models.lm_head import CHUNK_TOKENS, head_logprobs
from tdrm_rl.models.packing import forward_logits

# Std of the fresh PRM head: small, so every initial value is ~sigmoid(0) = 0.5.
PRM_HEAD_INIT_STD = 1e-3
PRM_READOUTS = ("logprob", "hidden")
# The logprob read-out's files beside the causal-LM checkpoint.
VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_INFO = "value_head.json"
# Initial weight a of the min log-prob term (softplus-parametrised, so a > 0).
LOGPROB_INIT_SCALE = 1.0


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


class LogprobValueModel(torch.nn.Module):
    """The `logprob` PRM read-out (see the module doc): a causal LM plus a scalar head and the weight a.

    forward(...).logits is [B, L, 2]: channel 0 the head's value logit w . h_j + b at each token, channel 1
    a * log p(x_{j+1} | x_<=j), the scaled log-prob of the NEXT input token (0 at the last column).
    `prm_step_logits` shifts channel 1 onto the token it scores, takes its running min over the response
    and adds it at the step ends. Saves as the causal-LM checkpoint plus value_head.safetensors.
    The log-probs come from the policy's chunked LM head (tdrm_rl/models/lm_head.py) in `chunk_tokens`-token chunks.
    """

    readout = "logprob"
    chunk_tokens: int | None = None  # LM-head chunk; None: lm_head.CHUNK_TOKENS

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config
        self.score = torch.nn.Linear(lm.config.hidden_size, 1)
        # softplus(raw) = a; raw = log(e^a - 1)
        # shape [1], not a 0-dim tensor: DeepSpeed's initial broadcast cannot view a 0-dim float as bytes.
        self.logprob_scale_raw = torch.nn.Parameter(torch.log(torch.expm1(torch.tensor([LOGPROB_INIT_SCALE]))))

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.lm.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, use_cache: bool = False, **_: Any):
        from transformers.modeling_outputs import TokenClassifierOutput

        hidden = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    use_cache=False).last_hidden_state  # after the final norm
        value = self.score(hidden)  # [B, L, 1]
        # The policy's chunked LM head: one [chunk_tokens, V] float32 block at a time, never [B, L-1, V].
        logp_next, _ = head_logprobs(self.lm.get_output_embeddings(), hidden[:, :-1], input_ids[:, 1:],
                                     chunk_tokens=self.chunk_tokens or CHUNK_TOKENS)  # [B, L-1]
        logp_next = torch.nn.functional.pad(logp_next, (0, 1))
        scaled = torch.nn.functional.softplus(self.logprob_scale_raw) * logp_next
        return TokenClassifierOutput(logits=torch.cat([value, scaled[..., None].to(value.dtype)], -1))

    def save_pretrained(self, path: str, state_dict: dict | None = None, safe_serialization: bool = True,
                        **kwargs: Any) -> None:
        import json

        from safetensors.torch import save_file

        state = state_dict if state_dict is not None else self.state_dict()
        self.lm.save_pretrained(path, state_dict={k[3:]: v for k, v in state.items() if k.startswith("lm.")},
                                safe_serialization=True, **kwargs)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items() if not k.startswith("lm.")},
                  os.path.join(path, VALUE_HEAD_FILE))
        with open(os.path.join(path, VALUE_HEAD_INFO), "w") as f:
            json.dump({"readout": self.readout}, f)


def prm_checkpoint_readout(path: str) -> str:
    """The read-out of a saved PRM checkpoint: logprob when it carries a value head file, else hidden."""
    return "logprob" if os.path.isfile(os.path.join(path, VALUE_HEAD_FILE)) else "hidden"


def _load_logprob_prm(path: str, init_from_policy: bool, trust_remote_code: bool) -> torch.nn.Module:
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True,
                                                  trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ValueError(f"PRM checkpoint {path!r}: cannot load the causal LM: {e}") from e
    model = LogprobValueModel(lm)
    if init_from_policy:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.score.weight.normal_(0.0, PRM_HEAD_INIT_STD)
            model.score.bias.zero_()
    else:
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(os.path.join(path, VALUE_HEAD_FILE)), strict=False)
        missing = [k for k in missing if not k.startswith("lm.")]
        if missing or unexpected:
            raise ValueError(f"PRM checkpoint {path!r}: {VALUE_HEAD_FILE} does not match (missing {missing}, "
                             f"unexpected {unexpected})")
    return model


def load_prm(path: str, init_from_policy: bool, trust_remote_code: bool = False,
             readout: str = "hidden") -> tuple[Any, PreTrainedTokenizerBase]:
    """Load a PRM and its tokenizer.

    With `init_from_policy`, `path` is a causal-LM checkpoint: the backbone comes from it and
    the scalar head is fresh (zero bias, tiny weights); `readout` picks the architecture (module doc).
    Without it, `path` is a saved PRM and its files decide the read-out (`readout` is ignored).
    """
    if readout not in PRM_READOUTS:
        raise ValueError(f"unknown PRM read-out {readout!r}; known: {', '.join(PRM_READOUTS)}")
    path = _check_checkpoint(path, "PRM")
    tok = _load_tokenizer(path, trust_remote_code, "PRM")
    if not init_from_policy:
        readout = prm_checkpoint_readout(path)
    if readout == "logprob":
        model = _load_logprob_prm(path, init_from_policy, trust_remote_code)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        return model, tok
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


def combine_readout(outputs: torch.Tensor, response_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-token value logits [B, L] from the model outputs [B, L, C]: channel 0 alone (hidden read-out), or
    (logprob read-out, C = 2) channel 0 plus the running min over response tokens of the shifted channel 1."""
    if outputs.shape[-1] == 1:
        return outputs[..., 0]
    if response_mask is None:
        raise ValueError("the logprob PRM read-out needs the response mask (which tokens are the response)")
    scaled_logp = torch.nn.functional.pad(outputs[..., 1], (1, 0))[:, :-1]  # column j: a * log p(x_j | x_<j)
    scaled_logp = torch.where(response_mask.bool(), scaled_logp, torch.zeros_like(scaled_logp))
    return outputs[..., 0] + torch.cummin(scaled_logp, dim=1).values


def prm_step_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    step_ends: torch.Tensor, step_mask: torch.Tensor,
                    response_mask: torch.Tensor | None = None) -> torch.Tensor:
    """PRM logits [B, S] at each step-end token, from ONE forward pass; masked steps give 0.

    `response_mask` [B, L] (the logprob read-out needs it) marks the response tokens."""
    outputs = forward_logits(model, input_ids, attention_mask, position_ids_from_mask(attention_mask))
    token_logits = combine_readout(outputs, response_mask)
    # Clamp so masked (possibly out-of-range) indices still gather safely; they are zeroed below.
    idx = step_ends.long().clamp(0, token_logits.shape[1] - 1)
    logits = torch.gather(token_logits, 1, idx)
    return torch.where(step_mask.bool(), logits, torch.zeros_like(logits))


@torch.no_grad()
def prm_prefix_step_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           step_ends: torch.Tensor, step_mask: torch.Tensor,
                           response_mask: torch.Tensor | None = None) -> torch.Tensor:
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
            keep = columns[columns <= end]
            prefix = input_ids[b, keep].unsqueeze(0)
            outputs = model(input_ids=prefix, use_cache=False).logits
            resp = None if response_mask is None else response_mask[b, keep].unsqueeze(0)
            out[b, k] = combine_readout(outputs, resp)[0, -1].float()
    return out
