import pytest
import torch

from tdrm_rl.models.tokenizer import build_char_tokenizer


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is as fast, and it does not collapse when other jobs share the cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def save_tiny_policy(path: str, overrides: list[str] = (), seed: int = 0) -> str:
    """A random tiny policy of the recipe's shape (with `overrides`) and the char tokenizer, saved at `path`."""
    from tdrm_rl.config import load_config
    from tdrm_rl.models.load import build_tiny_policy

    tok = build_char_tokenizer()
    build_tiny_policy(tok, load_config(None, list(overrides)).model, seed=seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """A random tiny policy of the default shape (the roles train it; what it knows does not matter)."""
    return save_tiny_policy(str(tmp_path_factory.mktemp("tiny")))
