"""Every stage's code dependencies in dvc.yaml are exactly the project modules its entry point imports, directly or
not, so an edit that changes a stage's output can never leave `dvc repro` saying that everything is up to date.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

# Imported by every stage, and left out of the deps on purpose, each for its reason:
NOT_DEPS = {
    "stages/__init__.py": "the package's docstring",
    "stages/cli.py": "error plumbing: turns a UserError into one line and an exit code",
    "stages/paths.py": "path constants, checked against dvc.yaml's outs by tests/test_paths.py",
    "stages/fileio.py": "atomic writes and space checks: what a file holds never depends on it",
    "stages/params.py": "typed params: their values reach a stage through the params dvc.yaml lists",
}
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a module from elsewhere."""
    path = REPO / name.replace(".", "/")
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path) -> set[Path]:
    """The project files ``path`` imports, at any depth of its code (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {file for file in map(module_file, names) if file is not None}
    return found


def closure(entry: Path) -> set[str]:
    """Every project file reachable by imports from ``entry``, as paths relative to the repository."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported_files(path))
    return {path.relative_to(REPO).as_posix() for path in seen}


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stages_code_deps_are_its_import_closure_both_ways(name):
    stage = STAGES[name]
    entry = module_file(stage["cmd"].split(" -m ")[1].split()[0])
    code_deps = {dep for dep in stage["deps"] if isinstance(dep, str) and dep.endswith(".py")}
    needed = closure(entry) - set(NOT_DEPS)
    assert not needed - code_deps, f"{name} imports these, which its deps do not name: {sorted(needed - code_deps)}"
    assert not code_deps - needed, f"{name}'s deps name these, which it does not import: {sorted(code_deps - needed)}"


def test_the_closure_finds_a_lazy_import(tmp_path):
    """download imports synth inside a function: the closure must still reach it (and synth's own imports)."""
    deps = closure(module_file("stages.download"))
    assert {"stages/synth.py", "stages/phonemes.py"} <= deps
