"""The quantized activations of an onnxruntime QDQ model, largest quantization error first.

As TFLite's QuantizationDebugger ranks a layer by the error its own quantization adds, each
activation the QDQ model quantizes (a ``QuantizeLinear`` -> ``DequantizeLinear`` pair on a tensor
that is not a weight) is compared with its value before the pair, on the same images: the
signal-to-quantization-noise ratio of onnxruntime's ``qdq_loss_debug``, summed over the images as
it sums them, lowest first. Unlike ``qdq_loss_debug.collect_activations``, which keeps every
tensor of every image, only the two sums per activation are kept, so memory does not grow with the
number of images. An activation is left in float by excluding from quantization every node that
writes or reads it, so no pair is left on it: those node names are what the search keeps in float.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def quantized_activations(model) -> list[tuple[str, str, tuple[str, ...]]]:
    """(the activation, its dequantized twin, the nodes that write or read it) of each QDQ pair."""
    graph = model.graph
    weights = {initializer.name for initializer in graph.initializer}
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    writers = {name: node for node in graph.node for name in node.output}
    pairs = []
    for quantize in graph.node:
        activation = quantize.input[0] if quantize.op_type == "QuantizeLinear" else None
        if activation is None or activation in weights or writers.get(activation, quantize).op_type in QDQ_OPS:
            continue  # not a pair on an activation (a weight, or a constant folded into one)
        for dequantize in readers[quantize.output[0]]:
            if dequantize.op_type != "DequantizeLinear":
                continue
            nodes = [writers[activation].name] if activation in writers else []
            nodes += [node.name for node in readers[dequantize.output[0]] if node.op_type not in QDQ_OPS]
            pairs.append((activation, dequantize.output[0], tuple(dict.fromkeys(nodes))))
    return pairs


def worst_layers(qdq_model: bytes, inputs: np.ndarray, input_name: str) -> list[tuple[str, ...]]:
    """Each quantized activation's nodes, lowest signal-to-quantization-noise ratio on `inputs` first."""
    import onnx
    import onnxruntime

    model = onnx.load_from_string(qdq_model)
    pairs = [pair for pair in quantized_activations(model) if pair[2]]
    watched = list(dict.fromkeys(name for activation, twin, _ in pairs for name in (activation, twin)))
    outputs = {output.name for output in model.graph.output}
    for name in watched:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = onnxruntime.SessionOptions()
    # As qdq_loss_debug runs it: no graph rewrite fuses a pair away.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    signal, noise = defaultdict(float), defaultdict(float)
    for image in inputs:
        values = dict(zip(watched, session.run(watched, {input_name: image[None]}), strict=True))
        for activation, twin, _ in pairs:
            before = values[activation].astype(np.float64)
            signal[activation, twin] += float(np.sum(before**2))
            noise[activation, twin] += float(np.sum((before - values[twin]) ** 2))
    eps = np.finfo(np.float64).eps

    def ratio_db(pair) -> float:
        key = pair[:2]
        return 10 * np.log10(max(signal[key], eps) / max(noise[key], eps))

    return [nodes for *_, nodes in sorted(pairs, key=ratio_db)]
