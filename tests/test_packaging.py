"""The package as pip installs it: every import declared, the wheel whole, and an export run from it."""

import ast
import functools
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

from conftest import exports_in

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
FIRST_PARTY = {"exporter", "converters", "containers"}

# Which requirement list a module's imports must be found in: the engine and its command line need
# the core dependencies alone; the service, the fleet's worker and the benchmark harness add an extra.
SCOPES = (
    ("exporter/service", ("service", "fleet")),
    ("exporter/cli_service.py", ("service", "fleet")),
    ("exporter/benchmark", ("benchmark",)),
    ("exporter/cli_benchmark.py", ("benchmark",)),
)


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """The distributions `names` bring with them (their requirements, transitively, without extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen or name == "automl-export-engine":
            continue
        seen.add(name)
        try:
            found = requires(name) or []
        except PackageNotFoundError:
            continue
        todo.extend(_name(r) for r in found if "extra ==" not in r)
    return seen


@functools.cache
def _declared(extras: tuple[str, ...]) -> set[str]:
    listed = [*PYPROJECT["dependencies"]]
    for extra in extras:
        listed += PYPROJECT["optional-dependencies"][extra]
    direct = {_name(r) for r in listed}
    for requirement in listed:  # an extra that names the package's own extras
        if match := re.match(r"automl-export-engine\[(.+)\]", requirement):
            direct |= _declared(tuple(match.group(1).split(",")))
    return _closure(direct)


def _third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in FIRST_PARTY | {"__future__"}}


def test_every_imported_module_is_declared():
    """Each third-party module the package imports comes with a distribution that pyproject.toml
    declares (directly or as a requirement of one) for that module's scope."""
    distributions = {name: {_name(d) for d in dists} for name, dists in packages_distributions().items()}
    missing = []
    for package in sorted(FIRST_PARTY):
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            extras = next((extras for prefix, extras in SCOPES if relative.startswith(prefix)), ())
            declared = _declared(extras)
            for module in sorted(_third_party_imports(path)):
                if (path.parent / f"{module}.py").is_file():  # a script's sibling (the device runners)
                    continue
                if not distributions.get(module, set()) & declared:
                    missing.append(f"{relative}: {module} ({', '.join(sorted(distributions.get(module, ['?'])))})")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


@pytest.mark.slow
def test_the_wheel_installs_and_exports(canary_model, tmp_path):
    """The wheel holds the data files the engine reads (op policy, JavaScript runners, py.typed) and
    its console script exports a real model from a new virtualenv, away from the checkout's code."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("automl_export_engine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "exporter/py.typed",
        "exporter/core/data/op_policy.json",
        "exporter/cli.py",
        "containers/recipe.py",
        "converters/edgetpu_tflite/data/edgetpu_ops.json",
    ):
        assert needed in names, needed
    assert any(name.startswith("converters/tf_js/js/") for name in names)
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)

    # A new virtualenv with the wheel alone; the libraries come from this one's site-packages, added
    # as a plain path (so the checkout's editable install is not among them).
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    (site,) = target.glob("lib/python*/site-packages")
    ours = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "libraries.pth").write_text(f"{ours}\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run(
        [
            str(target / "bin" / "python"),
            "-c",
            "import exporter, converters; print(exporter.__file__, converters.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.stdout.split() and all(path.startswith(str(site)) for path in where.stdout.split()), where
    out = tmp_path / "out"
    result = subprocess.run(
        [str(target / "bin" / "exporter"), "export", "--model", str(canary_model), "--output", str(out)]
        + ["--param", "quantization=float32"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (folder,) = exports_in(out)
    assert (folder / "model.tflite").stat().st_size > 0
