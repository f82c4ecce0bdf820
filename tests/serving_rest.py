"""TF Serving's REST ``predict`` in row format, applied to a loaded SavedModel signature.

This maps a request body to the signature and its outputs to a response body by the rules of
TF Serving's REST API (``g3doc/api_rest.md``; ``util/json_tensor.cc``): ``instances`` is a list,
of values when the signature has one input and of objects naming every input otherwise;
``{"b64": ...}`` carries binary strings; every output must share dimension 0 with the batch
(else "inconsistent batch size") and none may be a scalar; one output gives a list of values,
several a list of objects; outputs whose names end in ``_bytes`` come back as ``{"b64": ...}``.
The tests use it to check that the serving SavedModel answers a TF Serving client as AutoML's
container does, without a TF Serving binary.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


class RestError(ValueError):
    """What TF Serving would answer as ``{"error": ...}`` with status 400."""


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise RestError(f'an object value must be {{"b64": ...}}; found keys {sorted(value)}')
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _encode(name: str, value: np.ndarray | Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_encode(name, v) for v in value]
    if isinstance(value, bytes):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode()}
        return value.decode("utf-8")
    return value.item() if isinstance(value, np.generic) else value


def predict_rows(signature, body: dict) -> dict:
    """The response body TF Serving gives for a row-format ``body`` on `signature`."""
    import tensorflow as tf

    if "instances" not in body or "inputs" in body:
        raise RestError("a row-format request has 'instances' and no 'inputs'")
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise RestError("'instances' must be a non-empty list")
    positional, named = signature.structured_input_signature  # a loaded signature: all named
    specs = named or {spec.name: spec for spec in positional}
    names = sorted(specs)
    if len(names) == 1:
        columns = {names[0]: [_decode(v) for v in instances]}
    else:
        columns = {name: [] for name in names}
        for row in instances:
            if not isinstance(row, dict) or set(row) != set(names):
                raise RestError(f"every instance must be an object with exactly the inputs {names}")
            for name in names:
                columns[name].append(_decode(row[name]))
    tensors = {name: tf.constant(values, dtype=specs[name].dtype) for name, values in columns.items()}
    outputs = {name: tensor.numpy() for name, tensor in signature(**tensors).items()}
    batch = len(instances)
    for name, value in outputs.items():
        if value.ndim == 0:
            raise RestError(f"output {name!r} is a scalar; row format needs a batch dimension")
        if value.shape[0] != batch:
            raise RestError(f"inconsistent batch size: output {name!r} has {value.shape[0]} rows, batch {batch}")
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        return {"predictions": [_encode(name, row) for row in value]}
    return {
        "predictions": [
            {name: _encode(name, value[i]) for name, value in sorted(outputs.items())} for i in range(batch)
        ]
    }
