"""Rewrites of a model's graph into operations a target runtime has, with the same values.

Keras 3's exact GELU (``gelu(approximate=False)``, ConvNeXt's and most attention models') computes
``0.5 * x * erfc(-x / sqrt(2))``: TensorFlow's ``Erfc``, which neither tensorflowjs nor coremltools
converts ("Unsupported Ops ... Erfc"), though both convert ``Erf``. ``erfc(x) = 1 - erf(x)`` holds
for every x; in float32 the two differ where erfc is tiny (large x), where GELU's product with x
makes the difference vanish against the other term. The converters that need it freeze the function
(variables become constants), rewrite every ``Erfc`` node of the graph, and convert that; the
export's verification then holds the result to the format's tolerance like any other artifact.
A grouped convolution (Keras's depthwise convolution with a large kernel is a Conv2D whose filter
takes one input channel) becomes the depthwise convolution it is, which tensorflowjs runs.

Keras 3 also compiles some layers' functions with XLA (a depthwise convolution with a large kernel,
ConvNeXt's, calls a function marked ``_XlaMustCompile`` and ``_noinline``): the call stays a
``StatefulPartitionedCall`` in the frozen graph, which neither converter takes. The same rewrite
drops those two marks, so the functions are inlined like any other when the converter freezes the
graph. XLA is an execution choice, not part of what the function computes.
"""

from __future__ import annotations

from pathlib import Path

REWRITTEN = ("Erfc",)
# Function attributes that keep a call from being inlined: XLA compilation marks.
NOT_INLINED = ("_XlaMustCompile", "_noinline")


def needs_rewrite(saved_model_dir: Path) -> bool:
    """Whether the SavedModel uses an operation rewritten here or a function compiled with XLA
    (read from saved_model.pb alone)."""
    from exporter.core.op_policy import saved_model_op_uses
    from exporter.core.saved_model_proto import read_meta_graphs

    if any(use.op in REWRITTEN for use in saved_model_op_uses(saved_model_dir)):
        return True
    return any(
        function.attr[mark].b
        for meta_graph in read_meta_graphs(saved_model_dir)
        for function in meta_graph.graph_def.library.function
        for mark in NOT_INLINED
        if mark in function.attr
    )


def _inline_xla_functions(graph_def, graph=None) -> None:
    """Drop the marks that keep the library's functions, and the calls of them, from being inlined.
    A function changed so gets a new name (TensorFlow's runtime already holds one of the old name, with the marks), and
    every call names it so."""
    renamed = {}
    for function in graph_def.library.function:
        if any(mark in function.attr for mark in NOT_INLINED):
            for mark in NOT_INLINED:
                function.attr.pop(mark, None)
            renamed[function.signature.name] = f"{function.signature.name}_inlined"
            function.signature.name = renamed[function.signature.name]
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for node in nodes:
        for mark in NOT_INLINED:  # a call marked so is not inlined either
            node.attr.pop(mark, None)
        for value in node.attr.values():
            functions = [value.func] if value.HasField("func") else list(value.list.func)
            for function in functions:
                function.name = renamed.get(function.name, function.name)


def _rewrite_erfc(graph_def, graph=None) -> int:
    """Every ``Erfc(x)`` node of the graph (outside functions) becomes ``Sub(1, Erf(x))`` under
    its own name, so its consumers are unchanged. Returns how many were rewritten."""
    from tensorflow.core.framework import node_def_pb2

    count = 0
    for node in list(graph_def.node):
        if node.op != "Erfc":
            continue
        dtype = node.attr["T"]
        erf = node_def_pb2.NodeDef(name=f"{node.name}/as_erf", op="Erf", input=[node.input[0]])
        erf.attr["T"].CopyFrom(dtype)
        one = node_def_pb2.NodeDef(name=f"{node.name}/one", op="Const")
        one.attr["dtype"].CopyFrom(dtype)
        one.attr["value"].tensor.dtype = dtype.type
        one.attr["value"].tensor.float_val.append(1.0)
        node.op = "Sub"
        del node.input[:]
        node.input.extend([one.name, erf.name])
        graph_def.node.extend([erf, one])
        count += 1
    return count


def for_converters(concrete):
    """`concrete` (a traced function of one image) with its variables frozen and its graph
    rewritten into operations tensorflowjs and coremltools take: every Erfc as 1 - Erf, XLA
    functions inlined, grouped convolutions as depthwise ones. The same structured outputs, as a
    new concrete function."""
    marked = _rewritten(concrete, (_rewrite_erfc, _inline_xla_functions))
    return _rewritten(marked, (_depthwise_grouped_convolutions,))  # frozen again: the functions inline


def _rewritten(concrete, rewrites):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Aggressive: the calls of functions with stateful operations inside are inlined too (the
    # default leaves them, and the rewritten function's own call, as calls).
    frozen = convert_variables_to_constants_v2(concrete, aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def()
    for rewrite in rewrites:
        rewrite(graph_def, frozen.graph)

    def imported():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    pruned = wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(t.name) for t in frozen.inputs],
        fetches=[wrapped.graph.get_tensor_by_name(t.name) for t in frozen.outputs],
    )
    positional, named = concrete.structured_input_signature
    (spec,) = positional or tuple(named.values())
    structure = concrete.structured_outputs

    @tf.function(input_signature=[spec])
    def rewritten(image):
        return tf.nest.pack_sequence_as(structure, pruned(image))

    return rewritten.get_concrete_function()


def _depthwise_grouped_convolutions(graph_def, graph) -> None:
    """Every NHWC Conv2D whose constant filter takes one input channel while its input has C is a
    grouped convolution with C groups (TensorFlow infers the groups; tensorflowjs does not): the same
    values as a DepthwiseConv2dNative whose filter is the one reshaped [h, w, 1, C*m] -> [h, w, C, m]
    (output channel c*m + j is group c's j-th)."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}

    def constant(name: str):
        node = nodes.get(name.split(":")[0].lstrip("^"))
        while node is not None and node.op == "Identity":
            node = nodes.get(node.input[0].split(":")[0])
        return node if node is not None and node.op == "Const" else None

    for node in list(graph_def.node):
        if node.op != "Conv2D" or node.attr["data_format"].s not in (b"", b"NHWC"):
            continue
        in_depth = graph.get_operation_by_name(node.name).inputs[0].shape[-1]
        kernel = constant(node.input[1])
        if kernel is None or in_depth is None:
            continue
        values = tf.make_ndarray(kernel.attr["value"].tensor)
        height, width, filter_depth, out_depth = values.shape
        if filter_depth != 1 or in_depth == 1 or out_depth % in_depth:
            continue
        depthwise = values.reshape(height, width, in_depth, out_depth // in_depth)
        replacement = graph_def.node.add(name=f"{node.name}/depthwise_filter", op="Const")
        replacement.attr["dtype"].type = kernel.attr["dtype"].type
        replacement.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(depthwise))
        node.op = "DepthwiseConv2dNative"
        node.input[1] = replacement.name
        node.attr.pop("use_cudnn_on_gpu", None)  # Conv2D's alone
