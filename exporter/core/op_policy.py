"""Which TensorFlow operations a model folder's SavedModel may hold, checked before TensorFlow runs it.

A SavedModel is a program: loading it and calling its functions runs whatever operations its
graphs hold, and TensorFlow has operations that read and write files (``ReadFile``, ``WriteFile``,
dataset readers, summary writers), call back into Python (``PyFunc``) or talk to other machines.
An image classifier needs none of them, so ``saved_model.pb`` is read here as a protobuf (no
TensorFlow runtime, nothing run) and every operation in it is looked up in ``data/op_policy.json``:
a decision for every operation in TensorFlow's registry, made from the operation's definition by
``op_policy_build.py`` (pure computation is allowed whatever model uses it). An operation the table
does not list (a custom op) is refused by name. Random and augmentation operations are refused with
the Keras layers they come from, since a classifier must answer the same image the same way.

Every node is seen: each MetaGraph's graph and every function in its library, and every function a
node names in an attribute. A name that is not in the library is itself an operation to the
runtime (a call node may name a primitive operation as its function), so it is checked as one.

The checkpoint operations (``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``) are in every
SavedModel with variables: its ``saver_def`` names a save and a restore function that the
TensorFlow 1 and C++ loaders run, feeding the model's own ``variables/variables`` path into the
saver's filename tensor (``tf.compat.v1.train.Saver.restore`` runs ``restore_op_name`` with
``{filename_tensor_name: path}``; TensorFlow 2's ``tf.saved_model.load`` restores with fresh
operations of its own instead). So those operations are allowed only in the part of the
SavedModel that nothing but the saver reaches, and only when every path they read or write is the
filename the loader feeds, with plain suffixes (``_temp/part``) appended: never a path of the
model's own choosing.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from exporter.core.errors import Code, ExportError
from exporter.core.graph_constants import check_constant_sizes
from exporter.core.saved_model_proto import read_meta_graphs

POLICY_FILE = Path(__file__).parent / "data" / "op_policy.json"
GRAPH = "graph"  # where an operation in a MetaGraph's own graph (not in a function) is
SERVING_KEY = "serving_default"
PLACES_SHOWN = 3  # places named per refused operation
OPS_SHOWN = 12  # refused operations named in one error

# The other files a TensorFlow loader may read a SavedModel from, instead of saved_model.pb.
OTHER_FORMS = ("saved_model.pbtxt", "saved_model.cpb")
# Checkpoint operations that take a path, and which of their inputs are paths.
PATH_INPUTS = {"SaveV2": (0,), "RestoreV2": (0,), "MergeV2Checkpoints": (0, 1)}
# A constant appended to the loader's filename: a relative suffix that climbs nowhere.
SAFE_SUFFIX = re.compile(r"[A-Za-z0-9_.\-/]*")
# A Keras layer's scope in a node name: its snake_case class name, numbered when repeated.
SCOPE_NUMBER = re.compile(r"_\d+$")

ALLOW, SAVER_ONLY, TRAINING_TIME, REFUSE = "allow", "saver_only", "training_time", "refuse"


@dataclass(frozen=True)
class OpPolicy:
    """Operation -> (decision, why), for every operation of the registry the table was built from."""

    decisions: dict[str, tuple[str, str]]
    tensorflow: str
    training_layers: dict[str, str]  # snake_case scope -> Keras layer class

    def decision(self, op: str) -> tuple[str, str]:
        return self.decisions.get(
            op,
            (REFUSE, f"is not an operation of TensorFlow {self.tensorflow}'s registry (a custom operation?)"),
        )

    def allows(self, op: str, in_saver: bool) -> bool:
        decision = self.decision(op)[0]
        return decision == ALLOW or (in_saver and decision == SAVER_ONLY)


@functools.cache
def load_policy(path: Path = POLICY_FILE) -> OpPolicy:
    data = json.loads(Path(path).read_text())
    decisions = {
        op: (decision, why)
        for decision, groups in data["decisions"].items()
        for why, ops in groups.items()
        for op in ops
    }
    return OpPolicy(decisions, data["tensorflow"], data["training_layers"])


class OpUse(NamedTuple):
    """One operation in a SavedModel: where it is (a function's name or "graph") and its node."""

    op: str
    where: str
    node: str
    in_saver: bool  # in the part of the SavedModel that only the variable saver reaches


def _node_name(reference: str) -> str:
    """The node a graph input ("^name", "name:1") or a saver tensor ("name:0") refers to."""
    return reference.lstrip("^").split(":", 1)[0]


def _function_names(attrs) -> list[str]:
    """Every function an attribute map names, in lists and in the functions' own attributes too."""
    names = []
    for value in attrs.values():
        kind = value.WhichOneof("value")
        if kind == "func":
            names.append(value.func.name)
            if value.func.attr:
                names += _function_names(value.func.attr)
        elif kind == "list" and value.list.func:
            for func in value.list.func:
                names.append(func.name)
                if func.attr:
                    names += _function_names(func.attr)
    return names


def _closure(starts: Iterable[str], edges: dict[str, list[str]]) -> set[str]:
    """`starts` and every name reachable from them through `edges` (names without edges: ignored)."""
    seen, todo = set(), [s for s in starts if s in edges]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(n for n in edges[name] if n in edges and n not in seen)
    return seen


@dataclass
class _Scopes:
    saver_nodes: set[str]  # graph nodes only the saver reaches
    saver_functions: set[str]  # library functions only the saver reaches
    callers: dict[str, list[tuple[str, str]]]  # function -> (where, node) of every node naming it
    serving: set[str]  # "graph" and the library functions the serving signature's outputs reach


def _analyse(meta_graph) -> tuple[list[OpUse], _Scopes]:
    """Every operation in one MetaGraph with where it is, and which part only the saver reaches.

    The saver's part: the graph nodes the saver_def's restore operation and save tensor reach
    through their inputs and nothing else in the graph reaches, and the library functions those
    nodes call (at any depth) that no other node or function calls. Every library function the
    saver does not reach counts as reachable by anyone: the TensorFlow 2 loader hands them out as
    the loaded object's methods.
    """
    graph = meta_graph.graph_def
    library = {f.signature.name for f in graph.library.function}
    # (where, node name, operation, library functions it calls) for every node
    found: list[tuple[str, str, str, list[str]]] = []
    callers: dict[str, list[tuple[str, str]]] = defaultdict(list)
    node_calls: dict[str, list[str]] = {}
    function_calls: dict[str, list[str]] = {}
    for where, nodes in [(GRAPH, graph.node)] + [(f.signature.name, f.node_def) for f in graph.library.function]:
        calls = node_calls if where == GRAPH else function_calls.setdefault(where, [])
        for node in nodes:
            names = _function_names(node.attr)
            found.append((where, node.name, node.op, names))
            called = [f for f in names if f in library]
            if where == GRAPH:
                calls[node.name] = called
            else:
                calls.extend(called)
            for f in called:
                callers[f].append((where, node.name))

    node_inputs = {n.name: [_node_name(i) for i in n.input] for n in graph.node}
    saver = meta_graph.saver_def if meta_graph.HasField("saver_def") else None
    roots = {_node_name(t) for t in (saver.restore_op_name, saver.save_tensor_name) if t} if saver else set()
    saver_reach = _closure(roots, node_inputs)
    # A node the rest of the graph uses is not the saver's alone.
    saver_nodes = saver_reach - _closure(set(node_inputs) - saver_reach, node_inputs)

    def functions_from(nodes: Iterable[str], extra: Iterable[str] = ()) -> set[str]:
        return _closure([f for n in nodes for f in node_calls[n]] + list(extra), function_calls)

    saver_reach_f = functions_from(saver_nodes)
    other_reach_f = functions_from(set(node_inputs) - saver_nodes, library - saver_reach_f)
    signature = meta_graph.signature_def.get(SERVING_KEY)
    outputs = {_node_name(t.name) for t in signature.outputs.values()} if signature else set()
    serving = functions_from(_closure(outputs, node_inputs)) | ({GRAPH} if outputs else set())
    scopes = _Scopes(saver_nodes, saver_reach_f - other_reach_f, callers, serving)

    uses = []
    for where, name, op, names in found:
        in_saver = name in saver_nodes if where == GRAPH else where in scopes.saver_functions
        uses.append(OpUse(op, where, name, in_saver))
        # A name not in the library is an operation to the runtime, which runs it in the call's place.
        uses += [OpUse(f, where, name, False) for f in names if f not in library]
    return uses, scopes


def op_uses(meta_graph) -> list[OpUse]:
    """Every operation in one MetaGraph, with where it is."""
    return _analyse(meta_graph)[0]


def saved_model_op_uses(saved_model_dir: str | Path) -> list[OpUse]:
    """Every operation in every MetaGraph of a SavedModel."""
    return [use for meta_graph in read_meta_graphs(saved_model_dir) for use in op_uses(meta_graph)]


def _place(where: str, node: str) -> str:
    short = node if len(node) <= 80 else node[:77] + "..."
    return f"{where} node {short}" if where != GRAPH else f"the graph, node {short}"


def check_saved_model_ops(saved_model_dir: str | Path, policy: OpPolicy | None = None) -> None:
    """Refuse a SavedModel that holds an operation an image classifier export does not allow.

    FAILED_PRECONDITION: the SavedModel is well formed, but the engine will not run it.
    """
    policy = policy or load_policy()
    others = [name for name in OTHER_FORMS if os.path.lexists(Path(saved_model_dir) / name)]
    if others:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"the SavedModel folder holds {' and '.join(others)} besides saved_model.pb: only "
            "saved_model.pb is checked, so no other form of the SavedModel may be there for a loader to read",
        )
    meta_graphs = read_meta_graphs(saved_model_dir)
    check_meta_graphs(meta_graphs, policy)
    check_constant_sizes(meta_graphs)  # what its tensors claim beyond their bytes, before anything loads them


def check_meta_graphs(meta_graphs: Iterable, policy: OpPolicy | None = None) -> None:
    """The operation check of check_saved_model_ops on MetaGraphDefs already read."""
    policy = policy or load_policy()
    refused: dict[str, list[OpUse]] = defaultdict(list)
    training: list[OpUse] = []  # in graph order, so the layers are named in the model's order
    in_serving = False
    bad_paths: list[str] = []
    for meta_graph in meta_graphs:
        uses, scopes = _analyse(meta_graph)
        decided: dict[tuple[str, bool], bool] = {}
        for use in uses:
            key = (use.op, use.in_saver)
            if key not in decided:
                decided[key] = policy.allows(use.op, use.in_saver)
            if decided[key]:
                continue
            if policy.decision(use.op)[0] == TRAINING_TIME:
                training.append(use)
                in_serving = in_serving or use.where in scopes.serving
            else:
                refused[use.op].append(use)
        bad_paths += _checkpoint_path_problems(meta_graph, uses, scopes)
    parts = []
    if training:
        parts.append(_training_time_message(training, in_serving, policy))
    if refused:
        parts.append(
            "the SavedModel uses operations an image classifier export does not allow: "
            + _refused_list(refused, policy)
        )
    if parts:
        raise ExportError(Code.FAILED_PRECONDITION, "; ".join(parts))
    if bad_paths:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "the SavedModel's variable saver reads or writes a path other than the one the loader gives it: "
            + ", ".join(bad_paths[:OPS_SHOWN]),
        )


def _places(uses: list[OpUse]) -> str:
    shown = "; ".join(_place(u.where, u.node) for u in uses[:PLACES_SHOWN])
    more = f"; and {len(uses) - PLACES_SHOWN} more" if len(uses) > PLACES_SHOWN else ""
    return f"in {shown}{more}"


def _refused_list(refused: dict[str, list[OpUse]], policy: OpPolicy) -> str:
    parts = []
    for op in sorted(refused)[:OPS_SHOWN]:
        decision, why = policy.decision(op)
        if decision == SAVER_ONLY:
            why = "is allowed only in the SavedModel's own variable saver"
        parts.append(f"{op}, which {why} ({_places(refused[op])})")
    if len(refused) > OPS_SHOWN:
        parts.append(f"and {len(refused) - OPS_SHOWN} more operations")
    return ", ".join(parts)


def training_layers_of(uses: Iterable[OpUse], policy: OpPolicy) -> list[str]:
    """The Keras layers (by class, in order of first appearance) whose scopes hold these nodes.

    Keras names a layer's scope by its class in snake case (``random_flip_1/...``); Keras 2 saves a
    layer's call as a function named after it (``__inference_random_flip_layer_call_fn_12``).
    """
    found: dict[str, None] = {}
    for use in uses:
        for part in use.node.split("/"):
            layer = policy.training_layers.get(SCOPE_NUMBER.sub("", part))
            if layer:
                found.setdefault(layer)
                break
        else:
            for scope, layer in policy.training_layers.items():
                if f"_{scope}_" in use.where:
                    found.setdefault(layer)
                    break
    return list(found)


def _training_time_message(uses: list[OpUse], in_serving: bool, policy: OpPolicy) -> str:
    layers = training_layers_of(uses, policy)
    ops = ", ".join(sorted({u.op for u in uses})[:OPS_SHOWN])
    where = f"active in {SERVING_KEY}" if in_serving else "in the SavedModel's functions"
    if layers:
        what = f"augmentation layers {', '.join(layers)} are {where} (operations {ops})"
    else:
        what = f"random or augmentation operations ({ops}) are {where} ({_places(uses)})"
    return (
        f"{what}: a classifier must give the same image the same answer, so export the inference model "
        "without them (build the model for export from the layers after the augmentation, or augment in "
        "the input pipeline instead) and export that"
    )


def _checkpoint_path_problems(meta_graph, uses: list[OpUse], scopes: _Scopes) -> list[str]:
    """The checkpoint operations whose paths are not the saver's filename with plain suffixes after it."""
    path_ops = [u for u in uses if u.op in PATH_INPUTS]
    if not path_ops:
        return []
    graph = meta_graph.graph_def
    filename = _node_name(meta_graph.saver_def.filename_tensor_name) if meta_graph.HasField("saver_def") else ""
    graph_nodes = {n.name: n for n in graph.node}
    library = {f.signature.name: f for f in graph.library.function}

    def feeds_filename(where: str, node: str) -> bool:
        inputs = graph_nodes[node].input if where == GRAPH else ()
        return bool(filename) and bool(inputs) and _node_name(inputs[0]) == filename

    @functools.cache
    def kinds_in(where: str) -> _PathKinds:
        if where == GRAPH:
            return _PathKinds(graph_nodes, frozenset({filename} - {""}))
        function = library[where]
        args = function.signature.input_arg
        # The function's first argument is the filename when every node that calls it is in the
        # graph and feeds it the saver's filename tensor.
        calls = scopes.callers.get(where, [])
        fed = bool(args) and bool(calls) and all(feeds_filename(w, n) for w, n in calls)
        return _PathKinds({n.name: n for n in function.node_def}, frozenset({args[0].name} if fed else ()))

    problems = []
    for use in path_ops:
        kinds = kinds_in(use.where)
        node = kinds.nodes[use.node]
        paths = [node.input[i] for i in PATH_INPUTS[use.op] if i < len(node.input)]
        try:
            plain = bool(paths) and all(kinds.of(p) == _PATH for p in paths)
        except RecursionError:  # a chain no saver builds
            plain = False
        if not use.in_saver or not plain:
            problems.append(f"{use.op} (in {_place(use.where, use.node)})")
    return problems


_PATH, _SUFFIX = "path", "suffix"


class _PathKinds:
    """What each string in one graph or function is: _PATH (the loader's filename with plain
    suffixes after it), _SUFFIX (a plain suffix) or None (anything else)."""

    def __init__(self, nodes: dict, filename: frozenset[str]):
        self.nodes = nodes
        self.filename = filename
        self.known: dict[str, str | None] = {}

    def of(self, reference: str) -> str | None:
        if reference.startswith("^"):
            return None
        name = _node_name(reference)
        if name not in self.known:
            self.known[name] = None  # a cycle reads as "anything else"
            self.known[name] = self._work_out(name)
        return self.known[name]

    def _work_out(self, name: str) -> str | None:
        if name in self.filename:
            return _PATH
        node = self.nodes.get(name)
        if node is None:
            return None
        inputs = [i for i in node.input if not i.startswith("^")]
        if node.op == "Const":
            values = [v.decode("utf-8", "replace") for v in node.attr["value"].tensor.string_val]
            return _SUFFIX if values and all(_safe(v) for v in values) else None
        if node.op in ("Identity", "ShardedFilename"):  # ShardedFilename's inputs 1 and 2 are numbers
            return _PATH if inputs and self.of(inputs[0]) == _PATH else None
        if node.op in ("Select", "SelectV2"):  # input 0 is the condition: ".part" or "_temp/part"
            found = {self.of(i) for i in inputs[1:3]}
            return found.pop() if len(inputs) == 3 and len(found) == 1 else None
        if node.op == "StringJoin":
            separator = node.attr["separator"].s.decode("utf-8", "replace") if "separator" in node.attr else ""
            found = [self.of(i) for i in inputs]
            return _PATH if found and found[0] == _PATH and None not in found and _safe(separator) else None
        if node.op == "Pack":
            return _PATH if inputs and {self.of(i) for i in inputs} == {_PATH} else None
        return None


def _safe(text: str) -> bool:
    """A suffix that stays beside the filename: no climbing, not absolute, no scheme."""
    return bool(SAFE_SUFFIX.fullmatch(text)) and ".." not in text and not text.startswith("/")
