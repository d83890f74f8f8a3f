"""spokenwords/paths.py and dvc.yaml name the same data files: a path changes in one module, and dvc.yaml with it."""

from __future__ import annotations

from pathlib import Path

import yaml

from spokenwords import paths
from spokenwords.paths import SPLIT_NAMES
from tests.helpers import REPO


def declared_paths() -> set[str]:
    """Every data path dvc.yaml declares as a stage's dependency or output, code files left out."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = set()
    for stage in stages.values():
        for entry in [*stage.get("deps", []), *stage.get("outs", []), *stage.get("metrics", [])]:
            path = entry if isinstance(entry, str) else next(iter(entry))
            if not path.endswith(".py"):
                found.add(path)
    return found


def module_paths() -> set[str]:
    """The DVC-tracked paths spokenwords/paths.py defines: its constants (apart from the git-ignored logs and state),
    the processed split files and the plot images.
    """
    untracked = {paths.TRAIN_TIMING, paths.EXPORT_LATENCY, paths.TRAIN_STATE}
    constants = {value for name, value in vars(paths).items() if name.isupper() and isinstance(value, Path)} - untracked
    splits = {
        path for split in SPLIT_NAMES for path in (paths.split_file(split), paths.split_file(split).with_suffix(".npy"))
    }
    images = {paths.image(name) for name in paths.IMAGE_NAMES}
    return {path.as_posix() for path in constants | splits | images}


def test_every_data_path_of_dvc_yaml_is_defined_in_paths():
    declared = declared_paths()
    assert declared <= module_paths(), (
        f"dvc.yaml names paths that spokenwords/paths.py lacks: {declared - module_paths()}"
    )


def test_every_path_in_paths_is_declared_in_dvc_yaml():
    """Folder outputs (data/raw, plots/images) count as declared when dvc.yaml names them or a file inside them."""
    declared = declared_paths()
    missing = {
        path
        for path in module_paths()
        if path not in declared and not any(item.startswith(f"{path}/") for item in declared)
    }
    assert not missing, f"spokenwords/paths.py defines paths that dvc.yaml never declares: {missing}"


def test_no_module_spells_out_a_path_of_its_own():
    """Stages and the library take their data paths from spokenwords/paths.py; none writes a literal 'data/' …"""
    literal = ('Path("data/', 'Path("models/', 'Path("metrics/', 'Path("plots/', 'Path("logs/', 'Path("checkpoints/')
    offenders = [
        module.relative_to(REPO).as_posix()
        for module in [*(REPO / "stages").glob("*.py"), *(REPO / "spokenwords").rglob("*.py")]
        if module.name != "paths.py" and any(text in module.read_text() for text in literal)
    ]
    assert not offenders, f"paths spelled out outside spokenwords/paths.py: {offenders}"
