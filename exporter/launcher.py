"""The ``exporter`` console script.

``exporter predict MODEL IMAGE...`` is the command a user runs to check an artifact and expects
answered at once, so its plain form is parsed here with argparse and answered without building
the typer app: typer's parameter coercion imports pydantic, more time than classifying a few
images with a small model. Everything else, and any predict this form does not parse (``-h``,
``--debug``, a flag it does not know, a bad value), goes to :mod:`exporter.cli`, which owns the
help text and the usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys

from exporter.core.errors import Code, ExportError


def quiet_libraries() -> None:
    # TensorFlow's C++ and absl logging would bury the one line a user needs to read.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # tensorflow_decision_forests (imported by tensorflowjs) would import IPython otherwise.
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")


def print_error(error: ExportError) -> int:
    """The one line an error prints, ``exporter: CODE: message``; returns the exit status."""
    kept = getattr(error, "report_path", None)  # an ExportFailed's report, kept without artifacts
    where = f" (the failed attempt's report: {kept})" if kept else ""
    print(f"exporter: {error.code.name}: {' '.join(error.message.split())}{where}", file=sys.stderr)
    signum = getattr(error, "signum", None)  # stopped by a signal: the shell's convention
    if signum is not None:
        return 128 + signum
    return 2 if error.code is Code.INVALID_ARGUMENT else 1


class _NotThisForm(Exception):
    """The arguments are not predict's plain form: exporter.cli takes them."""


class _PredictArguments(argparse.ArgumentParser):
    def error(self, message):  # argparse would print its usage and exit; typer's message is the one shown
        raise _NotThisForm(message)


def _predict_arguments(args: list[str]) -> argparse.Namespace | None:
    # The same arguments as exporter.cli's predict command (a test holds the two to the same names).
    parser = _PredictArguments(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("artifact")
    parser.add_argument("image", nargs="+")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true", dest="as_json")
    try:
        parsed = parser.parse_args(args)
    except (_NotThisForm, argparse.ArgumentError):
        return None
    return parsed if parsed.top_k >= 1 else None


def _predict(parsed: argparse.Namespace) -> int:
    from exporter.prediction import predict
    from exporter.terminal import NativeStderr, print_predictions

    try:
        with NativeStderr():  # the runtime's own log lines (XNNPACK's, TensorFlow's) go aside
            predictions = predict(parsed.artifact, parsed.image, top_k=parsed.top_k)
    except ExportError as error:
        return print_error(error)
    except KeyboardInterrupt:
        print("exporter: CANCELLED: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # still one line; `exporter predict --debug` shows the traceback
        print(f"exporter: INTERNAL: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print_predictions(predictions, as_json=parsed.as_json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["predict"] and not {"-h", "--help", "--debug"} & set(args):
        parsed = _predict_arguments(args[1:])
        if parsed is not None:
            quiet_libraries()
            return _predict(parsed)
    from exporter.cli import main as full_command_line

    return full_command_line(args)


if __name__ == "__main__":
    sys.exit(main())
