"""The layout's rules hold and their checkers bite: imports point down, lint is clean, and each
checker fails on a deliberate violation in a copy of the tree."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PACKAGES = ("exporter", "converters", "containers")


@pytest.fixture
def tree_copy(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    # import-linter finds the packages on sys.path: the copy's folder comes first.
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(folder), "PATH": str(BIN)},
        check=False,
    )


def ruff(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ruff"), *arguments], cwd=folder, capture_output=True, text=True, check=False)


def test_the_layers_hold_in_the_tree():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "module, climbing_import",
    [
        ("containers/recipe.py", "from converters.tflite.converter import MODEL_FILE"),  # back end -> format
        ("exporter/core/images.py", "from exporter.destinations import open_destination"),  # core -> destination
        ("converters/tflite/converter.py", "from exporter.run import export_model"),  # format -> pipeline
        ("converters/tflite/converter.py", "from exporter.destinations.local import local_path"),  # format -> sibling
        ("exporter/run.py", "from exporter.service.store import Store"),  # pipeline -> entry point
        ("converters/core_ml/converter.py", "from converters.tflite.metadata import read_metadata"),  # format -> format
        ("converters/tflite/converter.py", "from converters.edgetpu_tflite.compat import RULES"),  # against builds_on
    ],
)
def test_a_climbing_import_fails_the_layer_check(tree_copy, module, climbing_import):
    with (tree_copy / module).open("a") as handle:
        handle.write(f"\n{climbing_import}  # a deliberate violation\n")
    done = lint_imports(tree_copy)
    assert done.returncode != 0 and "BROKEN" in done.stdout.upper(), done.stdout + done.stderr


def test_ruff_passes_on_the_tree_and_fails_on_a_violation(tree_copy):
    for arguments in (["check", "."], ["format", "--check", "."]):
        done = ruff(ROOT, *arguments)
        assert done.returncode == 0, done.stdout + done.stderr
    with (tree_copy / "exporter" / "core" / "clock.py").open("a") as handle:
        handle.write("\nimport os\n")  # unused, and out of place
    assert ruff(tree_copy, "check", ".").returncode != 0
