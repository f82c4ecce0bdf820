"""The baseline: OpenVINO's own conversion of the SavedModel, as `ovc DIR --compress_to_fp16=False
--output_model OUT.xml` runs it (the model conversion API's convert_model, then save_model; float32
weights, as the engine's float32 export keeps them).

    python stock_openvino_convert.py SAVED_MODEL OUT.xml

Prints the import and conversion seconds as JSON.
"""

import json
import sys
import time

started = time.perf_counter()
import openvino  # noqa: E402

imported = time.perf_counter()
saved_model, out = sys.argv[1:3]
model = openvino.convert_model(saved_model)
openvino.save_model(model, out, compress_to_fp16=False)
done = time.perf_counter()
print(json.dumps({"import_seconds": imported - started, "convert_seconds": done - imported}))
