"""A model whose output is logits: detected on the held-out images, compared in probability space,
exported as probabilities (a softmax added, as AutoML's exports) or, by output_scores, as logits,
in every format that takes the param; each artifact says which (tflite metadata, the serving
SavedModel's assets/scores.txt, model.json's userDefinedMetadata, the Core ML model's output
description and metadata) and `exporter predict` prints it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from converters.core_ml.converter import check_spec, probabilities_producer
from converters.output_scores import describe, is_probability_distribution, softmax
from converters.tf_js.node_runtime import tfjs_predict
from converters.verification import Reference, Tolerance, compare, make_reference, source_scores
from exporter.core.errors import Code, ExportError
from exporter.core.images import load_image_set, normalize
from exporter.core.model_source import read_model
from exporter.core.tflite_model import TFLiteModel
from exporter.prediction import predict
from exporter.run import export_model

SHARPNESS, SHIFT = 12.0, -4.0  # logits = 12 p - 4: outside 0..1, rows not summing to 1, the canary's top-1


@pytest.fixture(scope="module")
def logits_model(tmp_path_factory, canary_model):
    """The colour canary with its softmax undone: a real SavedModel whose output is logits."""
    import tensorflow as tf

    canary = tf.saved_model.load(str(canary_model / "saved_model"))

    class Logits(tf.Module):
        def __init__(self):
            super().__init__()
            self.canary = canary

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            probabilities = self.canary.signatures["serving_default"](image=image)["probabilities"]
            return {"logits": SHARPNESS * probabilities + SHIFT}

    root = tmp_path_factory.mktemp("logits-model")
    module = Logits()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary_model / "dict.txt", root / "dict.txt")
    shutil.copytree(canary_model / "images", root / "images")
    (root / "manifest.json").write_text(json.dumps({"display_name": "canary_logits", "input": {"range": "0..1"}}))
    return root


def export(model: Path, destination: Path, fmt: str, **params) -> tuple[Path, dict]:
    result = export_model(
        model, {"modelFormat": fmt, "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}
    )
    return Path(result.output_dir), result.report


def heldout(model: Path, limit: int = 60):
    source = read_model(model)
    images = load_image_set(
        source.heldout_dir, source.labels, source.height, source.width, limit=limit, purpose="held-out"
    )
    return source, images


def test_the_source_is_detected_as_logits(logits_model, canary_model):
    assert make_reference(read_model(logits_model)).kind == "logits"
    assert make_reference(read_model(canary_model)).kind == "probabilities"


def test_comparison_does_not_depend_on_the_logits_scale():
    """A shift of every logit by 0.3 changes no probability: float16's 0.05 on scores still holds."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (200, 6)).astype(np.float32)
    reference = Reference(
        images=_unlabelled(200), inputs=np.zeros((200, 1, 1, 3), np.float32), scores=logits, kind="logits"
    )
    check = compare("test", reference, logits + 0.3, Tolerance(0.01, max_abs_diff=0.05), what="shifted logits")
    assert check.passed and check.max_abs_diff < 1e-5
    assert check.scores == {"source": "logits", "artifact": "logits", "comparedAs": "probabilities"}
    # Compared as probabilities with an artifact that outputs them: the same numbers.
    check = compare(
        "test", reference, softmax(logits), Tolerance(0.0, max_abs_diff=1e-5), "softmax", scores_kind="probabilities"
    )
    assert check.agreeing == check.decided and check.max_abs_diff < 1e-5
    # A real difference still fails, in probability space.
    with pytest.raises(ExportError, match=r"max abs difference"):
        compare("test", reference, logits * 1.5, Tolerance(1.0, max_abs_diff=0.05), what="sharpened logits")


def _unlabelled(count: int):
    from exporter.core.images import UNLABELED, ImageSet

    return ImageSet(
        tuple(Path(f"{i}.png") for i in range(count)), np.zeros((count, 1, 1, 3), np.uint8), np.full(count, UNLABELED)
    )


@pytest.mark.parametrize("quantization", ["float16", "uint8"])
def test_tflite_outputs_probabilities_by_default(logits_model, tmp_path, quantization):
    folder, report = export(logits_model, tmp_path, "tflite", quantization=quantization)
    check = report["checks"]["verification"]
    assert check["passed"] and check["scores"] == {
        "source": "logits",
        "artifact": "probabilities",
        "comparedAs": "probabilities",
    }
    metadata = json.loads((folder / "tflite_metadata.json").read_text())
    assert metadata["scores"]["are"] == "probabilities" and metadata["scores"]["softmaxAdded"] is True
    source, images = heldout(logits_model)
    scores = TFLiteModel(folder / "model.tflite").predict(normalize(images.pixels, *_fed(metadata)))
    assert (
        is_probability_distribution(scores) if quantization == "float16" else np.allclose(scores.sum(1), 1, atol=0.03)
    )
    assert_mediapipe_scores(folder / "model.tflite", images.pixels, upper=1.0)
    predictions = predict(folder / "model.tflite", images.paths[:5])
    assert {p.scores for p in predictions} == {"probabilities"}  # from the metadata's output name
    assert all(0.0 <= score <= 1.0 for p in predictions for _, score in p.top)


def test_tflite_keeps_the_logits_when_asked(logits_model, tmp_path):
    folder, report = export(logits_model, tmp_path, "tflite", quantization="float32", output_scores="logits")
    assert report["checks"]["verification"]["scores"]["artifact"] == "logits"
    metadata = json.loads((folder / "tflite_metadata.json").read_text())
    assert metadata["scores"] == {
        "are": "logits",
        "modelOutputs": "logits",
        "softmaxAdded": False,
        "description": "logits (unnormalized scores) of the 6 labels; apply a softmax for probabilities",
    }
    source, images = heldout(logits_model)
    inputs = normalize(images.pixels, source.mean, source.std)
    expected = source_scores(source, inputs)
    assert np.abs(TFLiteModel(folder / "model.tflite").predict(inputs) - expected).max() < 1e-3
    assert expected.min() < -3 and expected.max() > 5  # really logits
    # The file alone says so: predict prints it, with the logits as the scores.
    done = run_cli("predict", str(folder / "model.tflite"), *map(str, images.paths[:3]), "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [p["scores"] for p in printed] == ["logits"] * 3
    assert [p["top"][0]["score"] for p in printed] == pytest.approx(expected[:3].max(axis=1), abs=1e-3)


def test_serving_savedmodel_says_what_scores_are(logits_model, tmp_path):
    import tensorflow as tf

    from converters.tf_saved_model.converter import png_bytes

    source, images = heldout(logits_model, limit=20)
    for requested, kind in (("probabilities", "probabilities"), ("logits", "logits")):
        folder, report = export(logits_model, tmp_path / requested, "tf_saved_model", output_scores=requested)
        assert (
            report["checks"]["verification"]["passed"]
            and report["checks"]["verification"]["scores"]["artifact"] == kind
        )
        assert (folder / "assets" / "scores.txt").read_text().startswith(f"scores: {kind}")
        serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
        scores = serve(image_bytes=tf.constant([png_bytes(p) for p in images.pixels]), key=tf.constant(["k"] * 20))[
            "scores"
        ].numpy()
        assert is_probability_distribution(scores) == (kind == "probabilities")
        assert {p.scores for p in predict(folder, images.paths[:3])} == {kind}  # from assets/scores.txt


def test_asking_for_the_logits_of_a_softmax_model_is_refused(canary_model, tmp_path):
    with pytest.raises(ExportError) as raised:
        export(canary_model, tmp_path, "tflite", quantization="float32", output_scores="logits")
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert "output_scores=logits: this model outputs probabilities" in raised.value.message


def test_output_scores_param_is_validated(canary_model, tmp_path):
    with pytest.raises(ExportError) as raised:
        export(canary_model, tmp_path, "tflite", output_scores="softmax")
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert "output_scores" in raised.value.message and "probabilities, logits" in raised.value.message


def _fed(metadata: dict) -> tuple[list, list]:
    feed = metadata["input"]["feed"]
    return feed["mean"], feed["std"]


def assert_mediapipe_scores(model: Path, pixels: np.ndarray, upper: float) -> None:
    """MediaPipe loads the model alone and its scores are probabilities (no 9.894 "score")."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in pixels[:10]:
            (top,) = (
                classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
                .classifications[0]
                .categories
            )
            assert 0.0 <= top.score <= upper + 1e-6


# -- tf_js and core_ml ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logits_heldout(logits_model):
    """(source, held-out images, their model inputs, the source's logits on them)."""
    source, images = heldout(logits_model)
    inputs = normalize(images.pixels, source.mean, source.std)
    return source, images, inputs, source_scores(source, inputs)


def expected_record(requested: str, labels: int) -> dict:
    return {
        "are": requested,
        "modelOutputs": "logits",
        "softmaxAdded": requested == "probabilities",
        "description": describe(requested, labels),
    }


def assert_tfjs_scores(folder: Path, inputs: np.ndarray, logits: np.ndarray, requested: str) -> None:
    """In Node.js (tfjs' wasm backend): the scores are softmax(logits) or the logits themselves, and
    the model's metadata, as tfjs hands it to a user (GraphModel.metadata), says which."""
    scores, info = tfjs_predict(folder, inputs, "wasm")
    assert info["metadata"]["scores"] == expected_record(requested, logits.shape[1])
    if requested == "probabilities":
        assert is_probability_distribution(scores)
        assert np.abs(scores - softmax(logits)).max() < 1e-4
    else:
        assert not is_probability_distribution(scores)
        assert np.abs(scores - logits).max() < 1e-3


# Both settings in one test: a parameter valued "logits" (a zoo model's name) would be deselected
# by conftest's filter for the slow zoo models.
def test_tfjs_outputs_what_output_scores_asks(logits_model, logits_heldout, tmp_path):
    source, images, inputs, logits = logits_heldout
    for requested in ("probabilities", "logits"):
        folder, report = export(logits_model, tmp_path / requested, "tf_js", output_scores=requested)
        check = report["checks"]["verification"]
        assert check["passed"] and check["agreeing"] == check["decided"]
        assert check["scores"] == {"source": "logits", "artifact": requested, "comparedAs": "probabilities"}
        manifest = json.loads((folder / "model.json").read_text())
        assert manifest["userDefinedMetadata"]["scores"] == expected_record(requested, 6)
        assert_tfjs_scores(folder, inputs, logits, requested)
        # predict runs the export folder in Node.js and prints what the scores are.
        done = run_cli("predict", str(folder), *map(str, images.paths[:3]), "--top-k", "1")
        assert done.returncode == 0, done.stderr
        assert f"scores are {requested}" in done.stdout
        assert ("(logit)" if requested == "logits" else "(probability)") in done.stdout
        predictions = predict(folder, images.paths[:3])
        expected = softmax(logits) if requested == "probabilities" else logits
        assert [p.top[0][1] for p in predictions] == pytest.approx(expected[:3].max(axis=1), abs=1e-3)


def test_tfjs_automl_contract_adds_the_softmax_too(logits_model, tmp_path):
    """AutoML's loader (@tensorflow/tfjs-automl) reads the output as probabilities: the wrapper that
    takes AutoML's input ends in the softmax."""
    folder, report = export(logits_model, tmp_path, "tf_js", input_contract="automl")
    assert report["checks"]["verification"]["passed"]
    assert report["checks"]["verification"]["scores"]["artifact"] == "probabilities"
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["userDefinedMetadata"]["scores"] == expected_record("probabilities", 6)
    source, images = heldout(logits_model, limit=12)
    predictions = predict(folder, images.paths)  # fed as AutoML's contract takes images
    assert {p.scores for p in predictions} == {"probabilities"}
    assert [p.top[0][0] for p in predictions] == [path.parent.name for path in images.paths]
    assert all(0.5 < p.top[0][1] <= 1.0 for p in predictions)


COREML_ARTIFACTS = {"neuralnetwork": "model.mlmodel", "mlprogram": "model.mlpackage"}


def softmax_count(spec) -> int:
    """Softmax layers (neural network) or ops (ML program) in a Core ML spec."""
    if spec.WhichOneof("Type") == "neuralNetworkClassifier":
        return sum(
            layer.WhichOneof("layer") in ("softmax", "softmaxND") for layer in spec.neuralNetworkClassifier.layers
        )
    function = spec.mlProgram.functions["main"]
    return sum(op.type == "softmax" for op in function.block_specializations[function.opset].operations)


def coreml_exports(model: Path, destination: Path, model_type: str) -> dict:
    """Both output_scores settings of one model type: {setting: (folder, report, spec)}."""
    import coremltools as ct

    made = {}
    for requested in ("probabilities", "logits"):
        folder, report = export(
            model, destination / requested, "core_ml", model_type=model_type, output_scores=requested
        )
        saved = ct.models.MLModel(str(folder / COREML_ARTIFACTS[model_type]), skip_model_load=True)
        made[requested] = folder, report, saved
    return made


def assert_coreml_scores(made: dict, labels: int) -> None:
    """Core ML cannot predict on Linux: what each saved model says of its scores, read back with
    coremltools, and the graph that computes them. The probabilities export is the logits export
    with one softmax more, and that softmax computes the classifier's probabilities dictionary."""
    counts = {}
    for requested, (_folder, report, saved) in made.items():
        spec = saved.get_spec()
        stated = report["checks"]["spec"]["scores"]
        assert json.loads(saved.user_defined_metadata["scores"]) == expected_record(requested, labels)
        probabilities = spec.description.predictedProbabilitiesName
        (output,) = [o for o in spec.description.output if o.name == probabilities]
        assert output.shortDescription == f"{describe(requested, labels)}, by label"
        assert stated["are"] == requested and stated["outputDescription"] == output.shortDescription
        assert (probabilities_producer(spec) in ("softmax", "softmaxND")) == (requested == "probabilities")
        counts[requested] = softmax_count(spec)
    assert counts["probabilities"] == counts["logits"] + 1


@pytest.mark.parametrize("model_type", ["neuralnetwork", "mlprogram"])
def test_coreml_outputs_what_output_scores_asks(logits_model, tmp_path, model_type):
    made = coreml_exports(logits_model, tmp_path, model_type)
    assert_coreml_scores(made, 6)
    for requested, (_folder, report, _saved) in made.items():
        assert report["checks"]["spec"]["numericalParity"] == "not run: Core ML cannot predict on Linux"
        assert report["checks"]["spec"]["scores"]["softmaxAdded"] == (requested == "probabilities")


def test_coreml_spec_check_catches_scores_said_wrongly(logits_model, tmp_path):
    """A model whose metadata calls softmax output logits fails the spec check."""
    import coremltools as ct

    folder, _ = export(logits_model, tmp_path / "out", "core_ml")
    saved = ct.models.MLModel(str(folder / "model.mlmodel"), skip_model_load=True)
    saved.user_defined_metadata["scores"] = json.dumps(expected_record("logits", 6))
    saved.save(str(tmp_path / "relabelled.mlmodel"))
    params = {"model_type": "neuralnetwork", "precision": "float32"}
    with pytest.raises(ExportError) as raised:
        check_spec(read_model(logits_model), tmp_path / "relabelled.mlmodel", params)
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert "does not say logits" in raised.value.message and "said to be logits" in raised.value.message


@pytest.mark.parametrize("fmt", ["tf_js", "core_ml"])
def test_logits_output_scores_refused_for_a_softmax_model(canary_model, tmp_path, fmt):
    with pytest.raises(ExportError) as raised:
        export(canary_model, tmp_path, fmt, output_scores="logits")
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert "output_scores=logits: this model outputs probabilities" in raised.value.message
    assert list(tmp_path.iterdir()) == []


def test_zoo_tf_module_logits_in_tfjs_and_coreml(zoo_model, tmp_path):
    """The zoo's tf.Module whose output is logits (96x96, -1..1), both settings in each format."""
    model = zoo_model("tf_module_logits")
    source = read_model(model)
    images = load_image_set(
        source.heldout_dir, source.labels, source.height, source.width, limit=60, purpose="held-out"
    )
    inputs = normalize(images.pixels, source.mean, source.std)
    logits = source_scores(source, inputs)
    assert make_reference(source).kind == "logits"
    for requested in ("probabilities", "logits"):
        folder, report = export(model, tmp_path / f"tfjs-{requested}", "tf_js", output_scores=requested)
        check = report["checks"]["verification"]
        assert check["passed"] and check["scores"]["artifact"] == requested
        assert_tfjs_scores(folder, inputs, logits, requested)
    made = coreml_exports(model, tmp_path / "coreml", "mlprogram")
    assert_coreml_scores(made, len(source.labels))
