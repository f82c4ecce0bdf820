"""The baseline: a serving SavedModel re-exported by hand, as a user writes it from the TF docs.

    python stock_savedmodel_export.py SAVED_MODEL SIZE OUT_DIR

Wraps the model's serving_default in a tf.function that takes encoded images (decode, resize,
call) and saves it with that signature: what TF Serving needs, without the engine's key and
labels outputs or its checks. Prints the import and conversion seconds as JSON.
"""

import json
import sys
import time

started = time.perf_counter()
import tensorflow as tf  # noqa: E402

imported = time.perf_counter()
saved_model, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = tf.saved_model.load(saved_model)
serve = model.signatures["serving_default"]
name = next(iter(serve.structured_input_signature[1]))


@tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
def classify(image_bytes):
    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), (size, size))

    images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.float32)
    return {"scores": next(iter(serve(**{name: images}).values()))}


tf.saved_model.save(model, out, signatures={"serving_default": classify})
done = time.perf_counter()
print(json.dumps({"import_seconds": imported - started, "convert_seconds": done - imported}))
