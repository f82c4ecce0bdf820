"""tf_js on models the sample was not: MobileNetV3 (HardSwish, which oneDNN's rewrites fuse into
an op no tfjs backend runs) and EfficientNet (a rank-4 bias the wasm backend refuses). Untrained
(weights=None) Keras applications at the digits model's size: the conversion and the runtimes
are what is under test, not accuracy."""

import json
import shutil
from pathlib import Path

import pytest

from exporter.run import export_model

pytestmark = pytest.mark.slow
HELDOUT, CALIBRATION = 40, 10


def keras_folder(root: Path, digits_model: Path, application: str) -> Path:
    """A model folder around an untrained keras.applications model, with a few digits images."""
    import keras

    from exporter.sample_models import _save_serving

    folder = root / application.lower()
    size = json.loads((digits_model / "manifest.json").read_text())["input"]["height"]
    model = getattr(keras.applications, application)(input_shape=(size, size, 3), weights=None, classes=10)
    _save_serving(model, folder / "saved_model", size)
    shutil.copy(digits_model / "dict.txt", folder / "dict.txt")
    for split, count in (("heldout", HELDOUT), ("calibration", CALIBRATION)):
        for label in (digits_model / "images" / split).iterdir():
            target = folder / "images" / split / label.name
            target.mkdir(parents=True)
            for image in sorted(label.iterdir())[: count // 10]:
                shutil.copy(image, target / image.name)
    manifest = {"display_name": application.lower(), "input": {"height": size, "width": size, "range": "0..255"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, digits_model):
    root = tmp_path_factory.mktemp("tfjs-zoo")
    return {name: keras_folder(root, digits_model, name) for name in ("MobileNetV3Small", "EfficientNetB0")}


def tfjs(folder: Path, destination: Path):
    return export_model(folder, {"modelFormat": "tf_js", "gcsDestination": {"outputUriPrefix": str(destination)}})


def test_mobilenet_v3_converts_without_onednn_rewrites_and_runs(zoo, tmp_path):
    result = tfjs(zoo["MobileNetV3Small"], tmp_path / "export")
    assert "_FusedHardSwish" not in (Path(result.output_dir) / "model.json").read_text()
    backends = result.report["checks"]["backends"]
    ran = [name for name, outcome in backends.items() if outcome["runs"]]
    assert ran and result.report["checks"]["verification"]["runtime"] == f"node {ran[0]}"
    assert result.report["checks"]["verification"]["passed"]


def test_efficientnet_falls_back_to_the_cpu_backend_where_wasm_refuses(zoo, tmp_path):
    result = tfjs(zoo["EfficientNetB0"], tmp_path)
    backends = result.report["checks"]["backends"]
    assert backends["wasm"]["runs"] is False and "rank-1 bias" in backends["wasm"]["reason"]
    assert backends["cpu"]["runs"] is True
    check = result.report["checks"]["verification"]
    assert check["runtime"] == "node cpu" and check["passed"] and check["images"] == HELDOUT
