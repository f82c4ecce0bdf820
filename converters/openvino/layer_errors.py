"""The quantized activations of an NNCF-quantized OpenVINO model, largest quantization error first.

The counterpart of converters/onnx/layer_errors.py: each ``FakeQuantize`` NNCF put on an
activation (weights are stored as int8 constants, not behind one) is compared with its input, on
the same images, by the signal-to-quantization-noise ratio, lowest first. An activation is left in
float by putting the ops that read it (its ``FakeQuantize``'s consumers: the convolution or matrix
product it quantizes the input of) in NNCF's ignored scope, which quantizes neither their inputs
nor their weights: those op names are what the search keeps in float.
"""

from __future__ import annotations

import numpy as np

from exporter.core import openvino_model as runtime


def worst_layers(model, inputs: np.ndarray) -> list[tuple[str, ...]]:
    """Each activation ``FakeQuantize``'s consumers, lowest signal-to-quantization-noise ratio first."""
    watched = model.clone()
    pairs = []
    for op in watched.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or op.input_value(0).get_node().get_type_name() == "Constant":
            continue
        readers = tuple(
            dict.fromkeys(target.get_node().get_friendly_name() for target in op.output(0).get_target_inputs())
        )
        pairs.append((op.input_value(0), op.output(0), readers))
    if not pairs:
        return []
    first = len(watched.outputs)
    watched.add_outputs([port for before, after, _ in pairs for port in (before, after)])
    compiled = runtime.compile_model(watched)
    signal, noise = np.zeros(len(pairs)), np.zeros(len(pairs))
    for image in inputs:
        results = compiled(image[None])
        for index in range(len(pairs)):
            before = results[first + 2 * index].astype(np.float64)
            after = results[first + 2 * index + 1]
            signal[index] += np.sum(before**2)
            noise[index] += np.sum((before - after) ** 2)
    eps = np.finfo(np.float64).eps
    ratio_db = 10 * np.log10(np.maximum(signal, eps) / np.maximum(noise, eps))
    return [pairs[index][2] for index in np.argsort(ratio_db, kind="stable")]
