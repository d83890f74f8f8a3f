"""Every stage's code dependencies in dvc.yaml are exactly the project modules its entry point imports, directly or
not, so an edit that changes a stage's output can never leave `dvc repro` saying that everything is up to date.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

# Imported by every stage, and left out of the deps on purpose, each for its reason (package __init__ files too: they
# hold a docstring only, which test_package_init_files_hold_only_a_docstring checks):
NOT_DEPS = {
    "spokenwords/cli.py": "error plumbing: turns a UserError into one line and an exit code",
    "spokenwords/paths.py": "path constants, checked against dvc.yaml's outs by tests/test_paths.py",
    "spokenwords/fileio.py": "atomic writes and space checks: what a file holds never depends on it",
    "spokenwords/params.py": "typed params: their values reach a stage through the params dvc.yaml lists",
}
INIT_FILES = [*REPO.glob("spokenwords/**/__init__.py"), REPO / "stages" / "__init__.py"]
PACKAGE_INITS = sorted(path.relative_to(REPO).as_posix() for path in INIT_FILES)
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
    needed = closure(entry) - set(NOT_DEPS) - set(PACKAGE_INITS)
    assert not needed - code_deps, f"{name} imports these, which its deps do not name: {sorted(needed - code_deps)}"
    assert not code_deps - needed, f"{name}'s deps name these, which it does not import: {sorted(code_deps - needed)}"


def test_the_closure_finds_a_lazy_import():
    """data.raw imports synthesis inside a function: the closure must still reach it (and synthesis' own imports)."""
    deps = closure(module_file("stages.download"))
    assert {"spokenwords/data/synthesis.py", "spokenwords/data/phonemes.py"} <= deps


def test_the_closure_reaches_a_package_module_imported_by_name():
    """``from spokenwords.models import embedding`` imports a module, not a name: the closure must follow it."""
    assert "spokenwords/models/embedding.py" in closure(module_file("stages.embed"))


@pytest.mark.parametrize("init", PACKAGE_INITS)
def test_package_init_files_hold_only_a_docstring(init):
    """An __init__ runs before every module of its package, so code in it would shape outputs without being a dep."""
    body = ast.parse((REPO / init).read_text(encoding="utf-8")).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init
