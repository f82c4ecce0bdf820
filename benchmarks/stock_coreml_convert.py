"""The baseline: a plain coremltools script, as a user writes it from the coremltools docs.

    python stock_coreml_convert.py SAVED_MODEL LABELS_FILE SIZE MODEL_TYPE OUT

Converts the serving_default function with an RGB image input (scale 1, for a model that takes
0..255 as the sample models do) and a classifier config. Prints the seconds as JSON.
"""

import json
import sys
import time

started = time.perf_counter()
import coremltools as ct  # noqa: E402
import tensorflow as tf  # noqa: E402

imported = time.perf_counter()
saved_model, labels_file, size, model_type, out = sys.argv[1:6]
size = int(size)
loaded = tf.saved_model.load(saved_model)
function = loaded.signatures["serving_default"]
name = next(iter(function.structured_input_signature[1]))
labels = open(labels_file).read().split()
model = ct.convert(
    [function],
    source="tensorflow",
    convert_to=model_type,
    inputs=[ct.ImageType(name=name, shape=(1, size, size, 3), color_layout=ct.colorlayout.RGB)],
    classifier_config=ct.ClassifierConfig(labels),
)
model.save(out)
done = time.perf_counter()
print(json.dumps({"import_seconds": imported - started, "convert_seconds": done - imported}))
