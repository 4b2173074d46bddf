"""Character-level tokenizer for the embedded tiny model.

One token per character of printable ASCII plus "\\n", and the step delimiter "\\n\\n" as a
single token, so that every step ends on exactly one token (the PRM reads its value there).
Wrapped as a `PreTrainedTokenizerFast`: it saves and loads with the usual HF calls.

Why byte-level BPE and not a WordLevel model: on a checkpoint whose config says
`model_type: qwen2`, transformers' AutoTokenizer ignores the saved pipeline and rebuilds the
tokenizer as `Qwen2Tokenizer` (byte-level BPE with its own pre-tokenizer) from the saved vocab
and merges. A vocab of byte-level symbols with the single merge "\\n" + "\\n" -> "\\n\\n" encodes
text identically under both pipelines, so the checkpoint loads correctly either way.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
BOS_TOKEN = "<bos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN)
DELIMITER = "\n\n"

# "\n\n" first so that it is one piece (then one merged token) rather than two "\n" pieces.
_SPLIT_PATTERN = r"\n\n|[\s\S]"


def byte_symbol(b: int) -> str:
    """The byte-level (GPT-2 style) printable symbol of byte `b`."""
    # Printable Latin-1 bytes stand for themselves; the rest are shifted past 255 in order.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    if b in keep:
        return chr(b)
    shifted = [x for x in range(256) if x not in keep]
    return chr(256 + shifted.index(b))


def char_vocab(vocab_size: int = 0) -> dict[str, int]:
    """The fixed vocabulary: special tokens, the delimiter, "\\n", then printable ASCII; then, up to `vocab_size`
    entries, fillers `<x0>`, `<x1>`, ... that no text encodes to (a model of a real shape, e.g. Qwen2.5's 151,936)."""
    nl = byte_symbol(ord("\n"))
    symbols = list(SPECIAL_TOKENS) + [nl + nl, nl] + [byte_symbol(c) for c in range(32, 127)]
    symbols += [f"<x{i}>" for i in range(max(0, vocab_size - len(symbols)))]
    return {s: i for i, s in enumerate(symbols)}


def build_char_tokenizer(vocab_size: int = 0) -> PreTrainedTokenizerFast:
    """Build the char-level tokenizer; decode(encode(text)) == text for printable ASCII + "\\n". With `vocab_size`,
    the vocabulary is padded to that size (see `char_vocab`); text encodes to the same ids either way."""
    nl = byte_symbol(ord("\n"))
    core = Tokenizer(models.BPE(vocab=char_vocab(vocab_size), merges=[(nl, nl)], unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        # "isolated" keeps every match as its own piece, so no character is ever dropped.
        pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    # Byte-level decoding concatenates with no separator (no inserted spaces).
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        padding_side="left",  # generation pads prompts on the left; saved with the tokenizer
    )


def step_delimiter_problem(tokenizer, delimiter: str) -> str | None:
    """Why `tokenizer` cannot carry `delimiter` (it must encode without <unk> and decode back), else None."""
    ids = tokenizer.encode(delimiter, add_special_tokens=False)
    if not ids:
        return "it encodes to no tokens"
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        return "it encodes to the unknown token"
    back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if back != delimiter:
        return f"it decodes back as {back!r}"
    return None


def special_prefix(tokenizer) -> list[int]:
    """The ids `tokenizer` puts in front of any text by itself (add_special_tokens=True): the BOS of a
    Llama-style tokenizer (R1-Distill's), GLM's [gMASK]<sop> if its pipeline adds it, nothing for Qwen's."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of prompts that are the model's whole input text: the tokenizer's own prefix (its BOS) goes in
    front only where the text does not already begin with it; suffix specials (an EOS) never (the model continues).

    One place for both rollout backends and HF generation: a chat template writes the BOS into the text itself
    (R1-Distill's begins with `{{bos_token}}`), and tokenising that with add_special_tokens=True, the default,
    put a second BOS in front of every prompt. A plain prompt still gets the BOS its model was trained with."""
    prefix = special_prefix(tokenizer)
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    return [list(row) if row[:len(prefix)] == prefix else prefix + list(row) for row in ids]
