"""Character-level tokenizer for the embedded tiny model.

One token per character of printable ASCII plus "\\n", and the step delimiter "\\n\\n" as a
single token so that every step ends on exactly one token (the PRM reads its value there).
Built with the `tokenizers` library and wrapped as a `PreTrainedTokenizerFast`, so it saves
and loads with the usual HF calls.
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

# Longest match first: "\n\n" must win over two single "\n" tokens.
_SPLIT_PATTERN = r"\n\n|[\s\S]"


def char_vocab() -> dict[str, int]:
    """The fixed vocabulary: special tokens, the delimiter, "\\n", then printable ASCII."""
    symbols = list(SPECIAL_TOKENS) + [DELIMITER, "\n"] + [chr(c) for c in range(32, 127)]
    return {s: i for i, s in enumerate(symbols)}


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the char-level tokenizer; decode(encode(text)) == text for ASCII text."""
    core = Tokenizer(models.WordLevel(vocab=char_vocab(), unk_token=UNK_TOKEN))
    # "isolated" keeps every match as its own piece, so no character is ever dropped.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated")
    # Fuse joins pieces with no separator; the default decoder would insert spaces.
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        padding_side="left",  # generation pads prompts on the left; saved with the tokenizer
    )
    return tok
