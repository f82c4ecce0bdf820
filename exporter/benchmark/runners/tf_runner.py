"""Times a SavedModel in TensorFlow on this machine's CPU and prints one line of JSON.

Run in a fresh process for each row: TensorFlow fixes its thread pools when it starts, and the
row's peak memory must be this runner's own. ``--kind source`` feeds the model folder's
SavedModel the normalized float images; ``--kind serving`` feeds the serving SavedModel (a
tf_saved_model export) what TF Serving would: the encoded PNG of each image and a key.

    python tf_runner.py SAVED_MODEL DATA_DIR --kind source|serving --threads N
        [--min-count 200] [--min-seconds 2] [--warmup 10]

DATA_DIR is the one tflite_runner.py reads, plus ``png/<index>.png``. The phases and the steady
state are timed as tflite_runner.py times them.
"""

import argparse
import json
import os
import time

from tflite_runner import add_timing_options, measure  # beside this file, as run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("saved_model")
    parser.add_argument("data")
    parser.add_argument("--kind", choices=("source", "serving"), required=True)
    add_timing_options(parser)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    with open(os.path.join(args.data, "meta.json")) as handle:
        meta = json.load(handle)
    count = meta["shape"][0]
    if args.kind == "source":
        inputs = np.fromfile(os.path.join(args.data, "inputs.f32"), dtype=np.float32).reshape(meta["shape"])
        fed = [tf.constant(image[None]) for image in inputs]
    else:
        fed = []
        for index in range(count):
            with open(os.path.join(args.data, "png", f"{index}.png"), "rb") as handle:
                fed.append(tf.constant([handle.read()]))

    started = time.perf_counter()
    serve = tf.saved_model.load(args.saved_model).signatures["serving_default"]
    input_name = next(iter(serve.structured_input_signature[1]))
    load_ms = (time.perf_counter() - started) * 1000

    def invoke(index):
        if args.kind == "source":
            outputs = serve(**{input_name: fed[index]})
            return next(iter(outputs.values())).numpy()[0]
        return serve(image_bytes=fed[index], key=tf.constant(["0"]))["scores"].numpy()[0]

    result = measure(
        invoke, count, args, meta, np, runtime="tensorflow", runtimeVersion=tf.__version__, loadInitMs=load_ms
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
