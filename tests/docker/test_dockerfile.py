"""Static checks of the GPU image (no Docker daemon here): pinned base and stack, package installed, entry point."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
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


def requirement_lines(path: str) -> list[str]:
    return [line.strip() for line in open(path).read().splitlines() if line.strip() and not line.strip().startswith("#")]


def pinned() -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in requirement_lines(PINS)]
    return {r.name: r for r in reqs}


def pip_installs() -> list[list[str]]:
    """The argument lists of every `pip install` in the Dockerfile's RUN lines (shell `&&` chains split)."""
    out = []
    for op, args in instructions():
        if op != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                out.append(words[2:])
    return out


def option_values(words: list[str], *names: str) -> list[str]:
    """Values of `--name X`, `--name=X` and `-n X` in one pip command line."""
    values = []
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                values.append(words[i + 1])
            elif name.startswith("--") and word.startswith(name + "="):
                values.append(word.split("=", 1)[1])
    return values


def constraint_files() -> list[str]:
    """Exactly the files the Dockerfile hands pip as constraints (`--constraint` / `-c`)."""
    return [value for words in pip_installs() for value in option_values(words, "--constraint", "-c")]


def constraint_problems(path: str) -> list[str]:
    """Why pip would refuse `path` as a constraints file: extras (\"Constraints cannot have extras\"), or a line that
    is not a plain `name<spec>` requirement. Empty when pip takes it."""
    problems = []
    for line in requirement_lines(path):
        try:
            req = Requirement(line)
        except Exception as e:  # an option line (-r, -e) or a URL is not a constraint either
            problems.append(f"{line!r}: not a requirement ({e})")
            continue
        if req.extras:
            problems.append(f"{line!r}: constraints cannot have extras")
        if req.url:
            problems.append(f"{line!r}: constraints cannot be URLs")
    return problems


def pip_accepts_constraints(path: str) -> subprocess.CompletedProcess:
    """pip itself parses `path` as constraints, offline (`pip` is already installed, so nothing resolves)."""
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
                           "--disable-pip-version-check", "--constraint", path, "pip"],
                          capture_output=True, text=True, timeout=120)


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


def test_constraint_files_the_dockerfile_passes_have_no_extras() -> None:
    """F1: the image never installed tdrm-rl because its constraints file held `ray[default]==...`."""
    files = constraint_files()
    assert files, "the Dockerfile passes no --constraint file: nothing keeps pip from moving the pins"
    for rel in files:
        path = os.path.join(ROOT, rel)
        assert os.path.isfile(path), f"--constraint names a missing file: {rel}"
        assert constraint_problems(path) == [], f"{rel} is not a valid pip constraints file"
        result = pip_accepts_constraints(path)
        assert result.returncode == 0 and "cannot have extras" not in result.stderr, (rel, result.stderr)


def test_the_constraint_check_rejects_extras(tmp_path) -> None:
    """The two checks above bite on the file as it used to be."""
    bad = tmp_path / "constraints.txt"
    bad.write_text("# a pin with an extra\nray[default]==2.60.0\ntorch==2.13.0\n")
    assert constraint_problems(str(bad)) == ["'ray[default]==2.60.0': constraints cannot have extras"]
    result = pip_accepts_constraints(str(bad))
    assert result.returncode != 0 and "Constraints cannot have extras" in result.stderr


def test_the_dependency_layer_installs_every_extra_the_package_needs() -> None:
    """Extras live on the install line (not in the constraints): every pyproject extra of a pinned package is asked
    for in the layer that installs the pins, so the package install that follows adds nothing unpinned."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
    layer = [words for words in pip_installs() if "docker/requirements-gpu.txt" in option_values(words, "-r")]
    assert len(layer) == 1, "one RUN installs docker/requirements-gpu.txt"
    asked = [Requirement(w) for w in layer[0] if not w.startswith("-") and w not in option_values(layer[0], "-r",
                                                                                                    "-c", "--constraint")]
    asked_extras = {r.name: set(r.extras) for r in asked}
    for dep in deps:
        if dep.extras and dep.name in pinned():
            assert dep.extras <= asked_extras.get(dep.name, set()), f"the image does not install {dep}"
        if dep.name in asked_extras:
            assert dep.name in pinned(), f"{dep.name} is requested but not pinned"


def test_image_has_the_rdma_userspace_for_nccl() -> None:
    """F14: without libibverbs NCCL silently uses TCP sockets between nodes."""
    runs = " ".join(args for op, args in instructions() if op == "RUN")
    for package in ("rdma-core", "libibverbs1", "ibverbs-providers"):
        assert re.search(rf"apt-get install[^&]*\b{re.escape(package)}\b", runs), f"the image lacks {package}"


def test_image_installs_the_package_and_its_entry_point() -> None:
    ops = instructions()
    installs = pip_installs()
    assert any("docker/requirements-gpu.txt" in option_values(w, "-r") for w in installs)
    # The package itself, under the pins as constraints.
    assert any(w[-1] == "." and "docker/requirements-gpu.txt" in option_values(w, "--constraint", "-c")
               for w in installs)
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
