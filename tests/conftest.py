"""Shared fixtures: the real sample models, trained once and cached by a hash of their code."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# tensorflow_decision_forests (imported by tensorflowjs) imports IPython when stdout is captured
# unless its welcome message is off; IPython is not part of the stack.
os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "test-models"
EXPORTER = Path(sys.executable).parent / "exporter"

# Small enough to train in seconds, large enough that MobileNetV2 still learns the digits.
DIGITS_SIZE = 96
CANARY_SIZE = 32


def _training_hash() -> str:
    code = (REPO / "exporter" / "sample_models.py").read_bytes()
    return hashlib.sha256(code + f"{DIGITS_SIZE}-{CANARY_SIZE}".encode()).hexdigest()[:16]


def _cached(name: str, build) -> Path:
    folder = CACHE / _training_hash() / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test worker may be training it: wait, then reuse
        if not (folder / "manifest.json").exists():
            build(folder)  # writes into a temporary sibling and moves it into place whole
    return folder


@pytest.fixture(scope="session")
def digits_model() -> Path:
    from exporter.sample_models import make_digits_model

    return _cached("digits", lambda out: make_digits_model(out, size=DIGITS_SIZE))


@pytest.fixture(scope="session")
def canary_model() -> Path:
    from exporter.sample_models import make_colour_canary

    return _cached("canary", lambda out: make_colour_canary(out, size=CANARY_SIZE))


@pytest.fixture
def model_copy(tmp_path):
    """A writable copy of a model folder, for tests that break one on purpose."""

    def copy(folder: Path) -> Path:
        target = tmp_path / "model"
        shutil.copytree(folder, target)
        return target

    return copy


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run(
        [str(EXPORTER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def exports_in(folder: Path) -> list[Path]:
    """Every entry the engine may have left in a destination, hidden staging folders included."""
    return sorted(folder.iterdir()) if folder.exists() else []


TFLITE_MODES = ("uint8", "int8", "float16", "dynamic_range", "float32")


def tflite_config(destination: Path, quantization: str) -> dict:
    return {
        "modelFormat": "tflite",
        "gcsDestination": {"outputUriPrefix": str(destination)},
        "params": {"quantization": quantization},
    }


@pytest.fixture(scope="session")
def tflite_exports(tmp_path_factory, digits_model, canary_model):
    """Every (model, quantization) exported once: (destination, ExportResult, stage events)."""
    from exporter.run import export_model

    made = {}
    for name, model in (("digits", digits_model), ("canary", canary_model)):
        for quantization in TFLITE_MODES:
            destination = tmp_path_factory.mktemp(f"{name}-{quantization}")
            stages = []
            result = export_model(
                model,
                tflite_config(destination, quantization),
                progress=lambda s, e, stages=stages: stages.append((s, e)),
            )
            made[name, quantization] = (destination, result, stages)
    return made


def exports_by_quantization(tmp_path_factory, model: Path, model_format: str, quantizations) -> dict:
    """`model` exported to `model_format` in each quantization, sharing one load: quantization ->
    (export folder, report)."""
    from converters.load_scope import shared_loads
    from exporter.run import export_model

    made = {}
    with shared_loads():
        for quantization in quantizations:
            destination = tmp_path_factory.mktemp(f"{model_format}-{quantization}")
            config = {
                "modelFormat": model_format,
                "gcsDestination": {"outputUriPrefix": str(destination)},
                "params": {"quantization": quantization},
            }
            result = export_model(model, config)
            made[quantization] = Path(result.output_dir), result.report
    return made


@pytest.fixture(scope="session")
def serving_exports(tmp_path_factory, digits_model, canary_model):
    """The tf_saved_model export of each sample model: (export folder, report)."""
    from exporter.run import export_model

    made = {}
    for name, model in (("digits", digits_model), ("canary", canary_model)):
        destination = tmp_path_factory.mktemp(f"serving-{name}")
        result = export_model(
            model, {"modelFormat": "tf_saved_model", "gcsDestination": {"outputUriPrefix": str(destination)}}
        )
        made[name] = Path(result.output_dir), result.report
    return made


def tfjs_config(destination: Path, **params) -> dict:
    return {"modelFormat": "tf_js", "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}


@pytest.fixture(scope="session")
def tfjs_exports(tmp_path_factory, canary_model, digits_model):
    """tf_js exports: (model, quantization, input_contract) -> (export folder, report)."""
    from exporter.run import export_model

    made = {}
    cases = [
        ("canary", "float32", "native"),
        ("canary", "float16", "native"),
        ("canary", "uint8", "native"),
        ("canary", "float32", "automl"),
        ("digits", "uint8", "native"),
        ("digits", "float32", "automl"),
    ]
    for name, quantization, contract in cases:
        model = {"canary": canary_model, "digits": digits_model}[name]
        destination = tmp_path_factory.mktemp(f"tfjs-{name}-{quantization}-{contract}")
        result = export_model(model, tfjs_config(destination, quantization=quantization, input_contract=contract))
        made[name, quantization, contract] = Path(result.output_dir), result.report
    return made


@pytest.fixture(scope="session")
def zoo_model():
    """The zoo's model folders by name (tests/zoo.py): ``zoo_model("efficientnet_b0")``, trained once
    and cached between runs."""
    import zoo

    return zoo.zoo_model


# The zoo (tests/zoo.py) trains thirteen networks: from half a minute (the tf.Modules, the tutorial
# model) to a quarter of an hour (NASNetMobile) each on two cores, over an hour in all; three more
# entries hold the tutorial model other ways without training. The suite trains the quick ones;
# tests on the 96x96 others, and on their 32x32 variants (tests/test_zoo_families.py), run with
# --zoo (`make zoo-test`), and the whole matrix with `make zoo`.
# mobilenet_v3_small (a minute to train at 96x96, 30 to 60 s an export) runs with --zoo: its
# network is in the suite at 32x32 (tests/test_quantization_seeds.py).
QUICK_ZOO_MODELS = (
    "tf_module",
    "tf_module_logits",
    "attention",
    "tutorial",
    "tutorial_keras_file",
    "tutorial_uint8",
    "tutorial_image_bytes",
)
# The parameter names that carry a zoo model's name (a value such as output_scores="logits" is not one).
ZOO_PARAMS = ("model", "name")


def pytest_addoption(parser):
    parser.addoption(
        "--zoo", action="store_true", help="also run the tests on the zoo models that take minutes each to train"
    )


def _needs_a_slow_zoo_model(item) -> bool:
    if item.get_closest_marker("zoo"):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    import zoo

    return any(
        key in ZOO_PARAMS and value in zoo.ZOO and value not in QUICK_ZOO_MODELS for key, value in params.items()
    )


# Under pytest-xdist (make test runs two workers, --dist loadgroup) a group runs on one worker.
# The session fixtures that export several models are made once per worker that needs them: the
# tests using one share a group. The Docker tests share one too (each starts a Docker engine).
SHARED_EXPORTS = ("tfjs_exports", "tflite_exports", "serving_exports")
DOCKER_TEST_FILES = ("test_docker_auth.py", "test_docker_daemonless.py", "test_docker_engine.py", "test_service.py")


def _worker_group(item) -> str:
    shared = [name for name in SHARED_EXPORTS if name in getattr(item, "fixturenames", ())]
    if shared:
        return shared[0]
    if item.path.name in DOCKER_TEST_FILES:
        return "docker"
    return item.path.name  # a module's own fixtures are made once


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_worker_group(item)))
    if config.getoption("--zoo"):
        return
    kept, left_out = [], []
    for item in items:
        (left_out if _needs_a_slow_zoo_model(item) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
