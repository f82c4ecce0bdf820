"""tf_js exports in headless Chromium (wasm), and with AutoML's own JS loader."""

import numpy as np
import pytest

from converters.tf_js.browser import automl_classify, browser_predict
from converters.tf_js.converter import AUTOML_EXTRA, TOLERANCES
from converters.verification import compare, make_reference, source_scores
from exporter.core.images import load_image_set, normalize
from exporter.core.model_source import read_model

pytestmark = pytest.mark.slow


def test_graph_model_in_chromium_agrees_with_the_source(tfjs_exports, canary_model, digits_model):
    for key, model in ((("canary", "float32", "native"), canary_model), (("digits", "uint8", "native"), digits_model)):
        folder, _ = tfjs_exports[key]
        reference = make_reference(read_model(model), limit=120)
        scores, info = browser_predict(folder, reference.inputs)
        assert info["backend"] == "wasm"
        check = compare("chromium wasm", reference, scores, TOLERANCES[key[1]], what=folder.name)
        assert check.passed and check.images == 120


@pytest.mark.parametrize("name", ["canary", "digits"])
def test_automl_loader_classifies_like_the_source(tfjs_exports, name, request):
    source = read_model(request.getfixturevalue(f"{name}_model"))
    folder, _ = tfjs_exports[name, "float32", "automl"]
    at_224 = load_image_set(source.heldout_dir, source.labels, 224, 224, limit=120, purpose="held-out")
    at_input = load_image_set(
        source.heldout_dir, source.labels, source.height, source.width, limit=120, purpose="held-out"
    )
    expected = source_scores(source, normalize(at_input.pixels, source.mean, source.std))
    top, backend = automl_classify(folder, at_224.pixels.astype(np.float32))
    assert backend == "wasm"
    ranked = np.sort(expected, axis=1)
    decided = ranked[:, -1] - ranked[:, -2] >= 0.01
    agree = [t == source.labels[i] for t, i in zip(top, expected.argmax(1), strict=True)]
    # The loader resizes to 224 and the graph back to the input size, where the source was fed a
    # direct resize: the export's own tolerance for this contract (AUTOML_EXTRA) applies.
    flips = decided.sum() - sum(a for a, d in zip(agree, decided, strict=True) if d)
    assert flips <= np.floor(AUTOML_EXTRA * decided.sum())
