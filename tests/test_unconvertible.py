"""A model the conversion libraries refuse: one clear error naming the cause, nothing written."""

import json
import shutil

import pytest

from exporter.core.errors import Code, ExportError
from exporter.run import export_model


@pytest.fixture(scope="module")
def determinant_model(tmp_path_factory, canary_model):
    """A valid classifier whose graph uses MatrixDeterminant, which tfjs and Core ML lack."""
    import tensorflow as tf

    class Determinant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            matrices = tf.reshape(image[:, :2, :2, 0], [-1, 2, 2])
            return {"probabilities": tf.nn.softmax(tf.tile(tf.linalg.det(matrices)[:, None], [1, 6]))}

    root = tmp_path_factory.mktemp("determinant")
    module = Determinant()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary_model / "dict.txt", root / "dict.txt")
    (root / "manifest.json").write_text(json.dumps({"display_name": "determinant"}))
    shutil.copytree(canary_model / "images", root / "images")
    return root


@pytest.mark.parametrize("model_format,library", [("tf_js", "tensorflowjs"), ("core_ml", "coremltools")])
def test_refused_model_fails_cleanly(determinant_model, tmp_path, model_format, library):
    with pytest.raises(ExportError) as raised:
        export_model(
            determinant_model, {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(tmp_path)}}
        )
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert raised.value.message.startswith(f"{library} cannot convert this model: ")
    assert "MatrixDeterminant" in raised.value.message and "\n" not in raised.value.message
    assert list(tmp_path.iterdir()) == []
