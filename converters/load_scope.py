"""One load of each SavedModel, and one run of the source on its held-out images, per scope.

One export loads the source SavedModel several times over (the output-kind probe, the converter's
own trace, the reference scores its check compares against), and the benchmark harness exports one
model to many formats. Inside ``shared_loads()`` each of those is built once and handed to every
later caller; outside it (the default) nothing is kept, so a long-lived worker never holds a model
after its export.

    with shared_loads():
        for model_format in formats:
            export_model(model, {"modelFormat": model_format, ...})

Scratch folders (``shared_folder``) are shared the same way: written once per scope, removed when
it ends (the tflite modes all convert from one batch-1 SavedModel written for them), and so is
any context (``shared_context``: the private copy of the model an export reads).

The scope is a context variable: it covers the thread (and asyncio task) that opened it. What is
shared must not be changed by its users: loaded SavedModels are only traced and called, and the
reference's arrays are only read.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")
_memo: ContextVar[dict[Hashable, object] | None] = ContextVar("shared_loads", default=None)
_CLEANUP = ("cleanup",)  # the memo's ExitStack: what the scope removes when it ends


@contextmanager
def shared_loads() -> Iterator[None]:
    """Share loads within this block (nested blocks join the outer one)."""
    if _memo.get() is not None:
        yield
        return
    with ExitStack() as cleanup:
        token = _memo.set({_CLEANUP: cleanup})
        try:
            yield
        finally:
            _memo.reset(token)


def shared(key: Hashable, build: Callable[[], T]) -> T:
    """`build()`'s result, built once per scope for `key`; built every time outside a scope."""
    memo = _memo.get()
    if memo is None:
        return build()
    if key not in memo:
        memo[key] = build()
    return memo[key]  # type: ignore[return-value]


@contextmanager
def shared_context(key: Hashable, open_context: Callable[[], AbstractContextManager[T]]) -> Iterator[T]:
    """What the context manager `open_context()` gives, entered once per scope for `key` and exited
    when the scope ends; outside a scope, entered for this block alone."""
    memo = _memo.get()
    if memo is None:
        with open_context() as value:
            yield value
        return
    if key not in memo:
        memo[key] = memo[_CLEANUP].enter_context(open_context())
    yield memo[key]  # type: ignore[misc]


@contextmanager
def shared_folder(key: Hashable, fill: Callable[[Path], None]) -> Iterator[Path]:
    """A scratch folder `fill` writes once per scope for `key` and the scope removes when it ends;
    outside a scope, filled for this block alone and removed after it."""
    with shared_context(key, lambda: _scratch_folder(fill)) as folder:
        yield folder


@contextmanager
def _scratch_folder(fill: Callable[[Path], None]) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="export-scratch-"))
    try:
        fill(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sharing_loads(function: Callable[P, T]) -> Callable[P, T]:
    """Run `function` inside a ``shared_loads()`` scope (joining the caller's, if any)."""

    @functools.wraps(function)
    def within_scope(*args: P.args, **kwargs: P.kwargs) -> T:
        with shared_loads():
            return function(*args, **kwargs)

    return within_scope
