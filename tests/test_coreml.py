"""core_ml exports: the saved spec checked for real (Core ML cannot predict on Linux)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.core_ml.converter import check_fold, check_spec, graph_to_convert, image_input, input_plan
from converters.input_plan import InputPlan
from converters.output_scores import plan_for
from converters.signature import load_serving_signature
from exporter.core.errors import Code, ExportError
from exporter.core.images import load_image_set
from exporter.core.model_source import read_model
from exporter.core.request import parse_output_config
from exporter.run import export_model


def coreml_config(destination: Path, **params) -> dict:
    return {"modelFormat": "core_ml", "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}


@pytest.mark.parametrize(
    "model_type,artifact,kind,probabilities",
    [
        ("neuralnetwork", "model.mlmodel", "neuralNetworkClassifier", "Identity"),
        ("mlprogram", "model.mlpackage", "mlProgram", "classLabel_probs"),
    ],
)
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_canary_exports_with_checked_spec(canary_model, tmp_path, model_type, artifact, kind, probabilities, precision):
    result = export_model(canary_model, coreml_config(tmp_path, model_type=model_type, precision=precision))
    folder = Path(result.output_dir)
    assert (folder / artifact).exists() and (folder / "dict.txt").read_text().split()[0] == "red"
    spec = result.report["checks"]["spec"]
    assert spec["modelType"] == kind and spec["classLabel"] == "classLabel" and spec["probabilities"] == probabilities
    assert spec["input"]["height"] == 32 and spec["input"]["colorSpace"] == "RGB"
    assert spec["input"]["scale"] == pytest.approx(1 / 255, rel=1e-3) and spec["input"]["bias"] == [0.0, 0.0, 0.0]
    assert spec["labels"] == ["red", "yellow", "green", "cyan", "blue", "magenta"]
    assert spec["precision"] == precision  # read from the saved weights
    assert spec["numericalParity"] == "not run: Core ML cannot predict on Linux"
    assert spec["input"]["fold"] is None  # one std: the image input applies the whole normalization
    assert "verification" not in result.report["checks"]


def test_float16_halves_the_weights(digits_model, tmp_path):
    sizes = {}
    for precision in ("float32", "float16"):
        result = export_model(
            digits_model, coreml_config(tmp_path / precision, model_type="mlprogram", precision=precision)
        )
        sizes[precision] = sum(p.stat().st_size for p in Path(result.output_dir).rglob("weight.bin"))
    assert sizes["float16"] < 0.6 * sizes["float32"]


def test_scale_and_bias_follow_the_manifest(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"] = {"mean": [127.5] * 3, "std": [127.5] * 3}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for model_type in ("neuralnetwork", "mlprogram"):
        spec = export_model(folder, coreml_config(tmp_path / model_type, model_type=model_type)).report["checks"][
            "spec"
        ]
        assert spec["input"]["scale"] == pytest.approx(1 / 127.5, rel=1e-3)
        assert spec["input"]["bias"] == pytest.approx([-1.0] * 3, rel=1e-3)


def test_spec_check_catches_a_mismatch(canary_model, model_copy, tmp_path):
    result = export_model(canary_model, coreml_config(tmp_path))
    folder = model_copy(canary_model)
    (folder / "dict.txt").write_text("a\nb\nc\nd\ne\nf\n")
    with pytest.raises(ExportError) as raised:
        check_spec(
            read_model(folder),
            Path(result.output_dir) / "model.mlmodel",
            {"model_type": "neuralnetwork", "precision": "float32"},
        )
    assert raised.value.code is Code.FAILED_PRECONDITION and "labels" in raised.value.message


PER_CHANNEL = {"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}


def with_input(folder: Path, normalization: dict) -> Path:
    """`folder` with its manifest's input normalization replaced."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"] = normalization
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    "model_type,precision", [("neuralnetwork", "float32"), ("neuralnetwork", "float16"), ("mlprogram", "float16")]
)
def test_per_channel_std_is_folded_into_the_graph(canary_model, model_copy, tmp_path, model_type, precision):
    import coremltools as ct

    folder = with_input(model_copy(canary_model), PER_CHANNEL)
    result = export_model(folder, coreml_config(tmp_path / "out", model_type=model_type, precision=precision))
    image = result.report["checks"]["spec"]["input"]
    mean, std = np.array(PER_CHANNEL["mean"]), np.array(PER_CHANNEL["std"])
    # The image input takes 0..255 pixels: one scale (the average std), the mean per channel in the bias.
    assert image["scale"] == pytest.approx(1 / std.mean(), rel=1e-6)
    assert image["bias"] == pytest.approx(-mean / std.mean(), rel=1e-6)
    fold = image["fold"]
    assert fold["normalizationFoldedIntoGraph"] and fold["model"] == PER_CHANNEL
    assert fold["graphScale"] == pytest.approx(std.mean() / std, rel=1e-6) and fold["graphOffset"] == [0.0] * 3
    assert fold["graphScaleInModel"] == pytest.approx(fold["graphScale"], rel=1e-3)  # read from the saved graph
    assert fold["checked"]["images"] == 32 and fold["checked"]["maxAbsDiff"] <= 1e-4
    # What the saved model applies, composed: the manifest's (pixel - mean) / std on every channel.
    pixels = np.array([0.0, 77.0, 255.0])[:, None]
    applied = (image["scale"] * pixels + np.array(image["bias"])) * np.array(fold["graphScaleInModel"])
    assert applied == pytest.approx((pixels - mean) / std, rel=1e-3, abs=1e-3)
    artifact = next(Path(result.output_dir).glob("model.ml*"))
    metadata = ct.models.MLModel(str(artifact), skip_model_load=True).user_defined_metadata
    assert (
        json.loads(metadata["normalization"]) == PER_CHANNEL
        and json.loads(metadata["inputFold"])["model"] == fold["model"]
    )


def folded_graph_scores(serve, plan, pixels: np.ndarray) -> np.ndarray:
    """The graph Core ML converts (`serve`), fed what its image input makes of `pixels` by `plan`."""
    import tensorflow as tf

    return np.concatenate([next(iter(serve(tf.constant(x[None])).values())).numpy() for x in image_input(pixels, plan)])


def test_the_fold_is_the_manifests_normalization(canary_model, model_copy):
    """On every held-out image, the folded graph on raw pixels is the source on the manifest's
    normalization applied by hand; the folds a slip would make (channels swapped, the mean applied
    twice) are not, and the export's own check refuses them."""
    import tensorflow as tf

    source = read_model(with_input(model_copy(canary_model), PER_CHANNEL))
    scores = plan_for(source, {})
    serving = load_serving_signature(source.saved_model_dir)
    pixels = load_image_set(source.heldout_dir, source.labels, source.height, source.width, purpose="held-out").pixels
    normalized = (pixels - np.float32(source.mean)) / np.float32(source.std)
    by_hand = serving.function(**{source.input_key: tf.constant(normalized)})[source.output_key].numpy()
    plan = input_plan(source)
    assert plan.folded and len(pixels) >= 100
    serve = graph_to_convert(source, serving, plan, scores)
    np.testing.assert_allclose(folded_graph_scores(serve, plan, pixels), by_hand, atol=1e-5)
    assert check_fold(source, serve, plan, scores).max_abs_diff <= 1e-5
    mean, std, one_std = plan.model_mean, plan.model_std, plan.feed_std
    wrong = {
        "std channels swapped": InputPlan(mean, std[::-1], mean, one_std),
        "mean and std channels swapped": InputPlan(mean[::-1], std[::-1], mean[::-1], one_std),
        "mean applied twice": InputPlan(tuple(2 * m for m in mean), std, mean, one_std),
    }
    for name, bad in wrong.items():
        serve = graph_to_convert(source, serving, bad, scores)
        assert np.abs(folded_graph_scores(serve, bad, pixels) - by_hand).max() > 1e-2, name
        with pytest.raises(ExportError) as raised:
            check_fold(source, serve, bad, scores)
        assert raised.value.code is Code.FAILED_PRECONDITION and "folded" in raised.value.message, name


@pytest.mark.parametrize(
    "checked_against,problem",
    [
        ({"mean": PER_CHANNEL["mean"], "std": PER_CHANNEL["std"][::-1]}, "the graph multiplies the image's channels"),
        ({"mean": PER_CHANNEL["mean"][::-1], "std": PER_CHANNEL["std"]}, "input scale/bias"),
        ({"mean": [127.5] * 3, "std": [127.5] * 3}, "that the manifest's one std does not call for"),
    ],
    ids=["std-swapped", "mean-swapped", "one-std"],
)
def test_spec_check_catches_a_folded_mismatch(canary_model, model_copy, tmp_path, checked_against, problem):
    result = export_model(with_input(model_copy(canary_model), PER_CHANNEL), coreml_config(tmp_path / "out"))
    source = read_model(with_input(Path(shutil.copytree(canary_model, tmp_path / "other")), checked_against))
    with pytest.raises(ExportError) as raised:
        check_spec(
            source, Path(result.output_dir) / "model.mlmodel", {"model_type": "neuralnetwork", "precision": "float32"}
        )
    assert raised.value.code is Code.FAILED_PRECONDITION and problem in raised.value.message


def test_a_per_channel_manifest_catches_an_unfolded_model(canary_model, model_copy, tmp_path):
    result = export_model(canary_model, coreml_config(tmp_path / "out"))
    source = read_model(with_input(model_copy(canary_model), PER_CHANNEL))
    with pytest.raises(ExportError) as raised:
        check_spec(
            source, Path(result.output_dir) / "model.mlmodel", {"model_type": "neuralnetwork", "precision": "float32"}
        )
    assert "the metadata records no fold" in raised.value.message and "input scale/bias" in raised.value.message


def renamed_input(folder: Path, name: str) -> Path:
    """`folder` with its SavedModel's serving input renamed to `name` (the same model inside)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder / "saved_model"))
    serve = loaded.signatures["serving_default"]
    (key,) = serve.structured_input_signature[1]
    module = tf.Module()
    module.inner = loaded  # tracked, so its variables are saved with the wrapper
    spec = tf.TensorSpec([None, 32, 32, 3], tf.float32, name=name)
    module.serve = tf.function(lambda image: serve(**{key: image}), input_signature=[spec])
    shutil.rmtree(folder / "saved_model")
    tf.saved_model.save(module, str(folder / "saved_model"), signatures={"serving_default": module.serve})
    return folder


def test_an_input_of_another_name_keeps_its_checked_scaling(canary_model, model_copy, tmp_path):
    """coremltools names the image input's own ops after the SavedModel's input, which the export
    renames to `image`: the spec check finds them, and the fold after them, all the same."""
    folder = renamed_input(with_input(model_copy(canary_model), PER_CHANNEL), "input_1")
    assert read_model(folder).input_key == "input_1"
    for model_type in ("neuralnetwork", "mlprogram"):
        result = export_model(folder, coreml_config(tmp_path / model_type, model_type=model_type))
        image = result.report["checks"]["spec"]["input"]
        assert image["name"] == "image" and image["scale"] == pytest.approx(1 / np.mean(PER_CHANNEL["std"]), rel=1e-6)
        assert image["fold"]["graphScaleInModel"] == pytest.approx(image["fold"]["graphScale"], rel=1e-6)


@pytest.mark.parametrize(
    "params,problem",
    [
        ({"model_type": "neuralnetwork", "minimum_deployment_target": "iOS15"}, "needs model_type mlprogram"),
        ({"model_type": "mlprogram", "minimum_deployment_target": "iOS14"}, "cannot run an mlprogram"),
    ],
)
def test_combinations_coremltools_refuses_are_rejected_up_front(params, problem):
    with pytest.raises(ExportError) as raised:
        parse_output_config(coreml_config(Path("/tmp/x"), **params))
    (violation,) = raised.value.violations
    assert violation.field == "outputConfig.params.minimum_deployment_target" and problem in violation.description
