"""The baseline: a plain TFLiteConverter script, as a user writes it from the TensorFlow docs.

    python stock_tflite_convert.py SAVED_MODEL MODE CALIBRATION_DIR SIZE OUT.tflite

MODE is float32, float16, dynamic_range, uint8 or int8. The representative dataset feeds the
first 100 calibration images, resized to SIZExSIZE, as raw 0..255 pixels (right for a model that
takes 0..255, as the sample models do). Prints the import and conversion seconds as JSON.
"""

import json
import sys
import time
from pathlib import Path

started = time.perf_counter()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

imported = time.perf_counter()
saved_model, mode, calibration, size, out = sys.argv[1:6]
size = int(size)

converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
if mode != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
if mode == "float16":
    converter.target_spec.supported_types = [tf.float16]
if mode in ("uint8", "int8"):
    files = sorted(p for p in Path(calibration).rglob("*") if p.suffix in (".png", ".jpg"))[:100]

    def representative_dataset():
        for path in files:
            image = Image.open(path).convert("RGB").resize((size, size))
            yield [np.asarray(image, dtype=np.float32)[None]]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = getattr(tf, mode)
    converter.inference_output_type = getattr(tf, mode)
Path(out).write_bytes(converter.convert())
done = time.perf_counter()
print(json.dumps({"import_seconds": imported - started, "convert_seconds": done - imported}))
