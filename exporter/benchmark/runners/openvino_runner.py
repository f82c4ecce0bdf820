"""Times an OpenVINO IR classifier (model.xml + model.bin) on the CPU and prints one line of JSON.

Self-contained as tflite_runner.py is (copied beside it to remote devices): the standard library,
numpy and the openvino runtime, nothing of the engine. The pixels are fed as a consumer of the
model feeds them: ``(pixel - image_mean) / image_std`` from the IR's ``rt_info`` section
``exporter`` (the source's normalization when it states none), one image per inference, compiled
with the inference precision the IR states (``--precision default`` keeps the CPU plugin's own,
bfloat16 on CPUs that have it). Phases, steady state, accuracy and agreement are measured as
tflite_runner.py measures them.

    python3 openvino_runner.py MODEL_XML DATA_DIR --threads 1 [--precision f32|default]
        [--min-count 200] [--min-seconds 2] [--warmup 10]
"""

import argparse
import json
import time

from tflite_runner import add_timing_options, held_out, import_runtime, measure, normalized  # beside this file, as run


def stated(model, key, default):
    if model.has_rt_info(["exporter", key]):
        return model.get_rt_info(["exporter", key]).astype(str)
    return default


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    add_timing_options(parser)
    parser.add_argument("--precision", default=None, help="f32, bf16, ... or default (the plugin's own)")
    args = parser.parse_args()

    np, openvino = import_runtime("openvino", "the openvino runtime")
    meta, pixels = held_out(args.data, np)

    started = time.perf_counter()
    core = openvino.Core()
    model = core.read_model(args.model)
    precision = args.precision or stated(model, "inference_precision", "default")
    config = {"INFERENCE_NUM_THREADS": args.threads}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    load_ms = (time.perf_counter() - started) * 1000
    mean = json.loads(stated(model, "image_mean", json.dumps(meta["mean"])))
    std = json.loads(stated(model, "image_std", json.dumps(meta["std"])))
    fed = [image[None] for image in normalized(pixels, mean, std, np)]
    output = compiled.output(0)

    def invoke(index):
        return request.infer([fed[index]])[output][0]

    result = measure(
        invoke,
        len(fed),
        args,
        meta,
        np,
        runtime="openvino",
        # the precision it computed in beside the version, so the row shows it
        runtimeVersion=f"{openvino.__version__} {compiled.get_property('INFERENCE_PRECISION_HINT')}",
        loadInitMs=load_ms,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
