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
