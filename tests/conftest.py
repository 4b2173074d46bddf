import pytest

from tdrm_rl.cli.runtime import set_runtime_defaults

set_runtime_defaults()  # the CLI's environment: offline hubs, local Ray without auth, the DeepSpeed JIT cache


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session; actors ask for fractional CPUs."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def bos_char_tokenizer(prefix: tuple[str, ...] = ("<bos>",)):
    """The char tokenizer with a pipeline that puts `prefix` in front of every text (as R1-Distill's puts its BOS)
    and a chat template that writes the same tokens into the text: the case of a double BOS (review F11).
    The char ids are unchanged, so the tiny models run with it; new prefix tokens get ids after them."""
    from tokenizers import processors

    from tdrm_rl.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [t for t in prefix if t not in tok.get_vocab()]})
    ids = [(t, tok.convert_tokens_to_ids(t)) for t in prefix]
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join(prefix) + " $A", special_tokens=ids)
    tok.chat_template = ("".join(prefix) + "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    return tok
