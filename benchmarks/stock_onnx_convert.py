"""The baseline: tf2onnx's own conversion of the SavedModel, as `python -m tf2onnx.convert
--saved-model DIR --opset 18` runs it (the loader and converter calls of its command line).

    python stock_onnx_convert.py SAVED_MODEL OUT.onnx

Prints the import and conversion seconds as JSON.
"""

import json
import sys
import time

started = time.perf_counter()
import tf2onnx  # noqa: E402
from tf2onnx import tf_loader  # noqa: E402

imported = time.perf_counter()
saved_model, out = sys.argv[1:3]
graph_def, inputs, outputs, _, renames = tf_loader.from_saved_model(
    saved_model,
    None,
    None,
    signatures=["serving_default"],
    return_initialized_tables=True,
    return_tensors_to_rename=True,
)
tf2onnx.convert.from_graph_def(
    graph_def, input_names=inputs, output_names=outputs, opset=18, tensors_to_rename=renames, output_path=out
)
done = time.perf_counter()
print(json.dumps({"import_seconds": imported - started, "convert_seconds": done - imported}))
