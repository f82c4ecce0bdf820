"""Which TensorFlow operations a model folder's SavedModel may hold, checked before TensorFlow runs it.

A SavedModel is a program: loading it and calling its functions runs whatever operations its
graphs hold, and TensorFlow has operations that read and write files (``ReadFile``, ``WriteFile``,
dataset readers, summary writers), call back into Python (``PyFunc``) or talk to other machines.
An image classifier needs none of them, so ``saved_model.pb`` is read here as a protobuf (no
TensorFlow runtime, nothing run) and every operation in it is checked against an allow-list,
``data/allowed_ops.json``, made from real image classifiers (its ``about`` says which).

Every node is seen: each MetaGraph's graph and every function in its library, and every function a
node names in an attribute. A name that is not in the library is itself an operation to the
runtime (a call node may name a primitive operation as its function), so it is checked as one.

The checkpoint operations (``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``...) are in every
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
from exporter.core.saved_model_proto import read_meta_graphs

POLICY_FILE = Path(__file__).parent / "data" / "allowed_ops.json"
GRAPH = "graph"  # where an operation in a MetaGraph's own graph (not in a function) is
PLACES_SHOWN = 3  # places named per refused operation
OPS_SHOWN = 12  # refused operations named in one error

# The other files a TensorFlow loader may read a SavedModel from, instead of saved_model.pb.
OTHER_FORMS = ("saved_model.pbtxt", "saved_model.cpb")
# Checkpoint operations that take a path, and which of their inputs are paths.
PATH_INPUTS = {"SaveV2": (0,), "RestoreV2": (0,), "MergeV2Checkpoints": (0, 1)}
# A constant appended to the loader's filename: a relative suffix that climbs nowhere.
SAFE_SUFFIX = re.compile(r"[A-Za-z0-9_.\-/]*")


@dataclass(frozen=True)
class OpPolicy:
    """The operations allowed anywhere, those allowed only in the saver, and those never allowed."""

    allowed: frozenset[str]
    saver_only: frozenset[str]
    never: frozenset[str]
    never_patterns: tuple[re.Pattern, ...]

    def is_never(self, op: str) -> bool:
        return op in self.never or any(p.search(op) for p in self.never_patterns)

    def allows(self, op: str, in_saver: bool) -> bool:
        if self.is_never(op):
            return False
        return op in self.allowed or (in_saver and op in self.saver_only)


@functools.cache
def load_policy(path: Path = POLICY_FILE) -> OpPolicy:
    data = json.loads(Path(path).read_text())
    return OpPolicy(
        allowed=frozenset(data["allowed"]),
        saver_only=frozenset(data["saver_only"]),
        never=frozenset(op for ops in data["never"].values() for op in ops),
        never_patterns=tuple(re.compile(p) for p in data["never_patterns"]),
    )


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
    scopes = _Scopes(saver_nodes, saver_reach_f - other_reach_f, callers)

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
    refused: dict[str, list[OpUse]] = defaultdict(list)
    bad_paths: list[str] = []
    for meta_graph in read_meta_graphs(saved_model_dir):
        uses, scopes = _analyse(meta_graph)
        decided: dict[tuple[str, bool], bool] = {}
        for use in uses:
            key = (use.op, use.in_saver)
            if key not in decided:
                decided[key] = policy.allows(use.op, use.in_saver)
            if not decided[key]:
                refused[use.op].append(use)
        bad_paths += _checkpoint_path_problems(meta_graph, uses, scopes)
    if refused:
        parts = []
        for op in sorted(refused)[:OPS_SHOWN]:
            places = refused[op]
            shown = "; ".join(_place(u.where, u.node) for u in places[:PLACES_SHOWN])
            more = f"; and {len(places) - PLACES_SHOWN} more" if len(places) > PLACES_SHOWN else ""
            only = ", allowed only in the SavedModel's own variable saver" if op in policy.saver_only else ""
            parts.append(f"{op} (in {shown}{more}{only})")
        if len(refused) > OPS_SHOWN:
            parts.append(f"and {len(refused) - OPS_SHOWN} more operations")
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "the SavedModel uses operations an image classifier export does not allow: " + ", ".join(parts),
        )
    if bad_paths:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "the SavedModel's variable saver reads or writes a path other than the one the loader gives it: "
            + ", ".join(bad_paths[:OPS_SHOWN]),
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
