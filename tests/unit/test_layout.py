"""The package tree is the architecture: one installed top-level package, no import cycles, small files, and
the README's step diagram names the stages the code times."""

from __future__ import annotations

import ast
import os
import re
import tomllib

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAX_LINES = 400


def package_dirs() -> dict[str, str]:
    """Installed package name -> folder: tdrm_rl/** as is, and workers/** as tdrm_rl.workers.**."""
    found = {}
    for top, prefix in (("tdrm_rl", "tdrm_rl"), ("workers", "tdrm_rl.workers")):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            if "__init__.py" in files and "__pycache__" not in dirpath:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, top))
                found[prefix if rel == "." else prefix + "." + rel.replace(os.sep, ".")] = dirpath
    return found


def modules() -> dict[str, str]:
    """Module name -> file, for every module of the installed package."""
    out = {}
    for package, folder in package_dirs().items():
        for name in os.listdir(folder):
            if name.endswith(".py"):
                out[package if name == "__init__.py" else f"{package}.{name[:-3]}"] = os.path.join(folder, name)
    return out


def test_pyproject_installs_exactly_the_package_folders_under_one_top_level_name() -> None:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    assert sorted(tool["packages"]) == sorted(package_dirs())
    assert {p.split(".")[0] for p in tool["packages"]} == {"tdrm_rl"}
    assert tool["package-dir"] == {"tdrm_rl.workers": "workers"}


def imports_of(path: str, name: str, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its file (function-local imports included)."""
    tree = ast.parse(open(path).read())
    is_package = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {m: imports_of(p, m, set(mods)) for m, p in mods.items()}
    # A package's __init__ may import its own submodules (its public API); a submodule may not import
    # its own package back, and no other cycle is allowed.
    for m in graph:
        graph[m] = {t for t in graph[m] if not (t.startswith(m + ".") and mods[m].endswith("__init__.py"))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_library_never_imports_the_cli_except_its_runtime() -> None:
    mods = modules()
    for m, p in mods.items():
        if m.startswith("tdrm_rl.cli"):
            continue
        bad = {t for t in imports_of(p, m, set(mods)) if t.startswith("tdrm_rl.cli") and t != "tdrm_rl.cli.runtime"}
        assert not bad, f"{m} imports {bad}"


def test_the_math_knows_nothing_of_workers_or_ray() -> None:
    mods = modules()
    for m, p in mods.items():
        if m.startswith("tdrm_rl.algos"):
            source = open(p).read()
            assert not re.search(r"^\s*(import ray|from ray|from tdrm_rl\.workers)", source, re.M), m


@pytest.mark.parametrize("top", ["tdrm_rl", "workers", "tests", "bench"])
def test_no_file_over_400_lines(top: str) -> None:
    long = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                n = sum(1 for _ in open(path))
                if n > MAX_LINES:
                    long.append(f"{os.path.relpath(path, ROOT)}: {n}")
    assert not long, long


def test_readme_step_diagram_lists_the_timed_stages_in_order() -> None:
    from tdrm_rl.rl.metrics import RUN_STAGES, STAGES

    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("## One RL step", 1)[1].split("```", 2)[1]
    names = [re.match(r"(?:-> )?(\w+)", line.strip()).group(1) for line in block.strip().splitlines()
             if line.strip() and line.strip() != "per run:"]
    assert names == list(STAGES) + list(RUN_STAGES)


def test_step_docstring_lists_the_timed_stages_in_order() -> None:
    from tdrm_rl.rl import stages
    from tdrm_rl.rl.metrics import STAGES

    listed = [line.split()[0] for line in stages.__doc__.splitlines()[1:] if line.startswith("    ") and
              not line.startswith("     ")]
    assert listed == list(STAGES)
