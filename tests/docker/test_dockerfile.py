"""Static checks of the GPU image (no Docker daemon here): pinned base and stack, package installed, entry point."""

from __future__ import annotations

import json
import os
import re
import tomllib

import pytest
from packaging.requirements import Requirement

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
PINS = os.path.join(ROOT, "docker", "requirements-gpu.txt")
STACK = ("vllm", "torch", "transformers", "deepspeed", "ray")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = open(DOCKERFILE).read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, args = line.partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def pinned() -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in open(PINS).read().splitlines() if line.strip() and not line.startswith("#")]
    return {r.name: r for r in reqs}


def test_base_image_is_a_pinned_cuda_image() -> None:
    froms = [args for op, args in instructions() if op == "FROM"]
    assert len(froms) == 1
    image = froms[0]
    assert image.startswith("nvidia/cuda:")
    tag = image.split(":", 1)[1]
    assert re.match(r"^\d+\.\d+\.\d+-", tag), f"base image tag must name an exact CUDA version, got {tag!r}"
    assert "latest" not in tag


def test_stack_is_pinned_exactly() -> None:
    reqs = pinned()
    for name in STACK:
        assert name in reqs, f"{name} is not pinned in docker/requirements-gpu.txt"
        specs = list(reqs[name].specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name} must be pinned with ==, got {reqs[name]}"


def test_pins_satisfy_the_package_requirements() -> None:
    """The image must not need pip to move a pin to install tdrm-rl."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = pinned()
    for dep in map(Requirement, project["dependencies"]):
        if dep.name in reqs:
            version = next(iter(reqs[dep.name].specifier)).version
            assert dep.specifier.contains(version), f"pinned {dep.name}=={version} violates pyproject's {dep}"


def test_image_installs_the_package_and_its_entry_point() -> None:
    ops = instructions()
    runs = " ".join(args for op, args in ops if op == "RUN")
    assert "pip install -r docker/requirements-gpu.txt" in runs
    assert re.search(r"pip install --constraint docker/requirements-gpu.txt \.(\s|$)", runs)
    copied = [args.split()[0] for op, args in ops if op == "COPY"]
    for src in ("tdrm_rl", "workers", "recipes", "pyproject.toml"):
        assert src in copied, f"the image does not copy {src}"
    for src in copied:
        assert os.path.exists(os.path.join(ROOT, src)), f"COPY names a missing path: {src}"
    entry = [json.loads(args) for op, args in ops if op == "ENTRYPOINT"]
    assert entry == [["tdrm-rl"]]
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["tdrm-rl"] == "tdrm_rl.cli.main:main"
    from tdrm_rl.cli.main import main

    assert callable(main)


@pytest.mark.parametrize("path", [".venv", ".cache", "runs", ".git"])
def test_build_context_leaves_out_local_state(path: str) -> None:
    patterns = open(os.path.join(ROOT, ".dockerignore")).read().split()
    assert any(p.rstrip("*") == path or p == path + "*" for p in patterns), f"{path} would be sent to the daemon"
