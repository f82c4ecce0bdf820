"""Build the op policy table (``data/op_policy.json``) from TensorFlow's own op registry.

Every operation TensorFlow registers is decided here from its OpDef (whether it is stateful, the
names and types of its inputs and attributes) and a short list of reviewed categories below, never
from which example models happen to use it. Run ``python -m exporter.core.op_policy_build`` (or
``make op-policy``) after a TensorFlow upgrade; a test checks that the committed table is what this
module makes from the installed registry.

The rules, in the order they are applied (the first that matches decides):

1. ``SAVER_ONLY``: the checkpoint operations the SavedModel's own variable saver runs, allowed only
   in the part of the SavedModel that nothing but the saver reaches (op_policy.py checks their paths).
2. ``REFUSED_BY_NAME``: reviewed operations that touch the world although their OpDef does not show
   it by an argument name (``ReadFile``'s OpDef is stateless, ``Print`` writes to the process's stderr).
3. A string input or attribute named as a file, path, directory or network address (from the OpDef).
4. ``REFUSED_PATTERNS``: whole families by name (datasets, readers, summaries, debugger, RPC,
   collectives, TPU and host transfers).
5. Operations whose name starts with ``_``: TensorFlow's runtime-internal operations (graph rewrites,
   transfers, function arguments); TensorFlow's APIs never write them into a SavedModel.
6. Training-time behaviour: random operations (a ``seed``, ``alg``, ``algorithm`` or ``key`` and
   ``counter`` argument in the OpDef, or ``TRAINING_NAMED``) and the geometric warp of augmentation layers. Not a security
   matter, but a classifier whose serving function draws random numbers answers differently each
   call: refused with a message that names the Keras layers they come from.
7. Stateful operations (``is_stateful`` in the OpDef) are refused unless they are of a reviewed kind
   an inference graph uses (``STATEFUL_ALLOWED``): variables and their reads, function calls and
   control flow, checks that can only fail the call, lookup tables and tensor arrays inside the graph.
   Before that, variable updates other than a plain assignment (``AssignAddVariableOp``, resource
   scatter, optimizer ``Apply``) and any TensorFlow 1 reference input that is not an initial
   assignment or read-only are refused with their own reasons.
8. Everything else is pure computation by its OpDef (math, array, image, linear algebra, strings,
   control flow): allowed, whatever model uses it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

POLICY_FILE = Path(__file__).parent / "data" / "op_policy.json"

SAVER_ONLY = ("SaveV2", "RestoreV2", "MergeV2Checkpoints")

FILES = "reads or writes files"
PYTHON = "calls back into Python"
REMOTE = "reaches other processes, machines or devices"
OUTPUT = "writes to the process's output or logs"
CLOCK = "reads the clock or waits"
MEMORY = "returns uninitialized memory (it could hand out the process's own data)"
BATCHING = "batches calls from other sessions of the process together (TF Serving's in-graph batching)"
DATASETS = "runs a dataset, iterator or reader (they read files and run functions of their own)"
SUMMARIES = "writes summaries or debugger output"
INTERNAL = "is internal to TensorFlow's runtime (its APIs never write it into a SavedModel)"
STATEFUL = (
    "keeps state between calls or acts outside the graph (stateful in its OpDef) and is not of a kind an "
    "inference graph uses"
)
UPDATES = "updates a variable between calls (a training step), which an inference graph never does"
REFERENCES = (
    "writes through a TensorFlow 1 reference input (a variable, queue, stack or tensor array kept between calls)"
)
PATH_ARGUMENT = "takes a file, path, directory or address"

REFUSED_BY_NAME = {
    FILES: (
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "ImmutableConst",
        "FileSystemSetConfiguration",
        "LoadAndRemapMatrix",
        "GenerateVocabRemapping",
        "RecordInput",
        "DecodeProtoV2",
        "EncodeProto",
        "Save",
        "SaveSlices",
        "Restore",
        "RestoreSlice",
        "ShardedFilespec",
        "DTensorRestoreV2",
        "DistributedSave",
        "CalibrationStatisticsSaver",
        "DumpTensor",
        "Skipgram",
    ),
    PYTHON: ("PyFunc", "PyFuncStateless", "EagerPyFunc"),
    REMOTE: (
        "RemoteCall",
        "Send",
        "Recv",
        "XlaSend",
        "XlaRecv",
        "XlaSendToHost",
        "XlaRecvFromHost",
        "XlaHostCompute",
        "XlaCustomCall",
        "XlaCustomCallV2",
        "XlaCallModule",
        "XlaLaunch",
        "XlaLaunchV2",
        "GetSessionHandle",
        "GetSessionHandleV2",
        "GetSessionTensor",
        "DeleteSessionTensor",
        "TfLiteSubgraphExecute",
        "MlirPassthroughOp",
    ),
    OUTPUT: ("Print", "PrintV2"),
    CLOCK: ("Timestamp", "SleepOp", "SleepIdentityOp"),
    MEMORY: ("Empty",),
    BATCHING: ("BatchFunction", "Batch", "Unbatch", "UnbatchGrad"),
}
# A string argument with one of these names is a place outside the graph (a file, a folder, a host).
PATH_NAMES = re.compile(
    r"(^|_)(file|files|filename|filenames|file_name|file_pattern|patterns|path|paths|dir|directory|logdir|"
    r"log_dir_path|prefix|prefixes|memory_region_name|descriptor_source|vocab_file|new_vocab_file|"
    r"old_vocab_file|chunk_file|output_stream|address|server_address|data_source_name|ckpt_path|"
    r"shard_dir|debug_urls)$"
)
REFUSED_PATTERNS = (
    (re.compile(r"Dataset|Iterator|Reader"), DATASETS),
    (re.compile(r"Summary|^Debug|^ImportEvent$"), SUMMARIES),
    (re.compile(r"PyFunc"), PYTHON),
    (re.compile(r"Rpc|^Collective|Nccl|TPU|^(Infeed|Outfeed)|^_?(Host)?(Send|Recv)$"), REMOTE),
    (re.compile(r"File(?!name$)"), FILES),
)
# Random operations whose OpDef has no seed argument, and the geometric warp of Keras's
# RandomRotation, RandomZoom, RandomTranslation and RandomShear layers.
TRAINING_NAMED = (
    "RngBitGenerator",
    "StatelessRandomGetAlg",
    "NonDeterministicInts",
    "ImageProjectiveTransformV2",
    "ImageProjectiveTransformV3",
)

# Stateful operations an inference graph uses, by kind. Each is confined to the graph's own state.
STATEFUL_ALLOWED = {
    "function calls and control flow (the functions they call are checked too)": (
        "StatefulPartitionedCall",
        "If",
        "While",
        "Case",
    ),
    "the graph's own variables: handles, reads, initial assignment": (
        "VarHandleOp",
        "ReadVariableOp",
        "VarIsInitializedOp",
        "VariableShape",
        "DestroyResourceOp",
        "DisableCopyOnRead",
        "ResourceGather",
        "ResourceGatherNd",
        "AssignVariableOp",
        "VariableV2",
        "Variable",
        "Assign",
    ),
    "checks that can only fail the call": ("Assert", "CheckNumerics", "CheckNumericsV2"),
    "lookup tables built inside the graph (StringLookup, IntegerLookup)": (
        "HashTable",
        "HashTableV2",
        "AnonymousHashTable",
        "InitializeTableV2",
        "LookupTableFindV2",
        "LookupTableImportV2",
        "LookupTableSizeV2",
        "LookupTableExportV2",
        "MutableHashTableV2",
        "MutableHashTableOfTensorsV2",
        "MutableDenseHashTableV2",
        "AnonymousMutableHashTable",
        "AnonymousMutableHashTableOfTensors",
        "AnonymousMutableDenseHashTable",
        "LookupTableInsertV2",
        "LookupTableRemoveV2",
    ),
    "tensor arrays inside the graph (tf.map_fn, loops)": (
        "TensorArrayV3",
        "TensorArrayReadV3",
        "TensorArrayWriteV3",
        "TensorArrayGatherV3",
        "TensorArrayScatterV3",
        "TensorArrayConcatV3",
        "TensorArraySplitV3",
        "TensorArraySizeV3",
        "TensorArrayCloseV3",
    ),
    "a hint that a value is constant": ("GuaranteeConst",),
}
# Resource-variable updates (TensorFlow 1's reference forms are found by their ref inputs instead).
VARIABLE_UPDATES = re.compile(
    r"^Resource(Scatter|(Sparse)?Apply|CountUpTo|StridedSliceAssign)|^Assign(Add|Sub)VariableOp$"
)

# Keras layers whose training-time behaviour (random draws, warps) an inference graph must not hold.
TRAINING_LAYERS = re.compile(r"^Random|Dropout\d?D?$|Noise$|^(RandAugment|AugMix|MixUp|CutMix|Solarization)$")


def _string_arguments(op_def) -> list[str]:
    from tensorflow.core.framework import types_pb2

    names = [a.name for a in op_def.input_arg if a.type == types_pb2.DT_STRING]
    names += [a.name for a in op_def.attr if a.type in ("string", "list(string)")]
    return names


def _is_random(op_def) -> bool:
    names = {a.name for a in op_def.input_arg} | {a.name for a in op_def.attr}
    return bool({"seed", "alg", "algorithm"} & names) or {"key", "counter"} <= names or op_def.name in TRAINING_NAMED


def _writes_a_reference(op_def) -> bool:
    """A TensorFlow 1 reference input (the OpDef's ``is_ref``) other than an initial assignment or
    read-only plumbing (``RefIdentity``, ``RefSwitch``...)."""
    takes_ref = any(a.is_ref for a in op_def.input_arg)
    return takes_ref and op_def.name not in ("Assign", "IsVariableInitialized") and not op_def.name.startswith("Ref")


def decide(op_def) -> tuple[str, str]:
    """(decision, why) for one OpDef: decision is allow, saver_only, training_time or refuse."""
    name = op_def.name
    if name in SAVER_ONLY:
        return "saver_only", "a checkpoint operation of the SavedModel's own variable saver"
    for why, names in REFUSED_BY_NAME.items():
        if name in names:
            return "refuse", why
    if any(PATH_NAMES.search(argument) for argument in _string_arguments(op_def)):
        return "refuse", PATH_ARGUMENT
    for pattern, why in REFUSED_PATTERNS:
        if pattern.search(name):
            return "refuse", why
    if name.startswith("_"):
        return "refuse", INTERNAL
    if _is_random(op_def):
        return "training_time", "random or augmentation"
    if VARIABLE_UPDATES.search(name):
        return "refuse", UPDATES
    if _writes_a_reference(op_def):
        return "refuse", REFERENCES
    if op_def.is_stateful:
        for why, names in STATEFUL_ALLOWED.items():
            if name in names:
                return "allow", why
        return "refuse", STATEFUL
    return "allow", "pure computation"


def registry():
    """Every OpDef registered in the installed TensorFlow."""
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    ops = op_def_pb2.OpList()
    ops.ParseFromString(pywrap_tf_session.TF_GetBuffer(pywrap_tf_session.TF_GetAllOpList()))
    return list(ops.op)


def training_layers() -> dict[str, str]:
    """snake_case name -> class name of every Keras layer with training-time behaviour (Keras names
    a layer's scope in the graph by its class in snake case: ``random_flip_1``)."""
    import keras
    from keras.src.utils.naming import to_snake_case

    names = [n for n in dir(keras.layers) if TRAINING_LAYERS.search(n) and isinstance(getattr(keras.layers, n), type)]
    return {to_snake_case(n): n for n in sorted(names)}


def build() -> dict:
    from importlib import metadata

    decisions: dict[str, dict[str, list[str]]] = {}
    for op_def in registry():
        decision, why = decide(op_def)
        decisions.setdefault(decision, {}).setdefault(why, []).append(op_def.name)
    for groups in decisions.values():
        for names in groups.values():
            names.sort()
    return {
        "about": (
            "Every operation in TensorFlow's op registry and what an exported model may do with it, decided "
            "from its OpDef by exporter/core/op_policy_build.py (its docstring gives the rules); regenerate "
            "with `make op-policy`. An operation not listed here (a custom op) is refused by name."
        ),
        "tensorflow": metadata.version("tensorflow"),
        "keras": metadata.version("keras"),
        "decisions": {k: dict(sorted(v.items())) for k, v in sorted(decisions.items())},
        "training_layers": training_layers(),
    }


def render(table: dict) -> str:
    return json.dumps(table, indent=1) + "\n"


def main() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    table = build()
    POLICY_FILE.write_text(render(table))
    counts = {k: sum(len(v) for v in groups.values()) for k, groups in table["decisions"].items()}
    print(f"{POLICY_FILE.name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
