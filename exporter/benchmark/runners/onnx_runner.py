"""Times a model.onnx classifier in onnxruntime (CPU execution provider) and prints one line of JSON.

Self-contained as tflite_runner.py is (copied beside it to remote devices): the standard library,
numpy and onnxruntime, nothing of the engine. The pixels are fed as a consumer of the model feeds
them: ``(pixel - image_mean) / image_std`` from the model's own ``metadata_props`` (the source's
normalization when it states none), one image per run. Phases, steady state, accuracy and
agreement are measured as tflite_runner.py measures them.

    python3 onnx_runner.py MODEL DATA_DIR --threads 1 [--min-count 200] [--min-seconds 2] [--warmup 10]
"""

import argparse
import json
import time

from tflite_runner import add_timing_options, held_out, import_runtime, measure, normalized  # beside this file, as run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    add_timing_options(parser)
    args = parser.parse_args()

    np, onnxruntime = import_runtime("onnxruntime", "onnxruntime")
    meta, pixels = held_out(args.data, np)

    started = time.perf_counter()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000
    props = session.get_modelmeta().custom_metadata_map
    mean = json.loads(props["image_mean"]) if "image_mean" in props else meta["mean"]
    std = json.loads(props["image_std"]) if "image_std" in props else meta["std"]
    name = session.get_inputs()[0].name
    fed = [image[None] for image in normalized(pixels, mean, std, np)]

    def invoke(index):
        return session.run(None, {name: fed[index]})[0][0]

    result = measure(
        invoke,
        len(fed),
        args,
        meta,
        np,
        runtime="onnxruntime",
        runtimeVersion=onnxruntime.__version__,
        loadInitMs=load_ms,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
