"""The ``exporter`` command line: standalone exports, the formats table, sample models.

Exit status 0 only on success. Errors are one line on stderr, ``exporter: CODE: message``,
exit status 2 for a bad argument and 1 for anything else; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from exporter.cli_benchmark import benchmark
from exporter.cli_service import models_app, operations_app, serve, worker
from exporter.core.errors import Code, ExportError
from exporter.core.formats import DEFAULT_FORMAT, FORMAT_NAMES, describe_formats, formats_markdown
from exporter.core.stop_request import request_stop, requested_stop
from exporter.launcher import print_error, quiet_libraries

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Export trained image classifiers as AutoML's models.export does.",
)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"exporter {version('automl-export-engine')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """Export trained image classifiers as AutoML's models.export does."""


FORMAT_HELP = "modelFormat: " + ", ".join(FORMAT_NAMES) + f" (default {DEFAULT_FORMAT})"
DEBUG: dict[str, str] = {}  # what --debug shows on failure besides the traceback


@contextlib.contextmanager
def native_logs_captured():
    """TensorFlow's native logs go aside while it works; --debug shows them on failure."""
    from exporter.terminal import NativeStderr

    with NativeStderr() as native:
        try:
            yield native.console
        finally:
            DEBUG["native_log"] = native.text()


def _param_pairs(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExportError(Code.INVALID_ARGUMENT, f"--param {pair!r}: expected KEY=VALUE")
        params[key] = value
    return params


def _input_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or int(height) < 1 or int(width) < 1:
        raise ExportError(Code.INVALID_ARGUMENT, f"--input-size {text!r}: expected HxW, e.g. 224x224")
    return int(height), int(width)


@app.command()
def export(
    model: Annotated[
        Path,
        typer.Option(help="model folder (SavedModel, dict.txt, manifest.json), SavedModel folder, or .keras/.h5 file"),
    ],
    output: Annotated[str, typer.Option(help="folder, file:///dir or gs://bucket/dir; image URI for docker")],
    model_format: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = DEFAULT_FORMAT,
    param: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="a format param, repeatable (see 'exporter formats')"),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="calibration and held-out images, when the model folder has none")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="labels file, one a line in the output's order (default: dict.txt in the model folder)"),
    ] = None,
    input_size: Annotated[str | None, typer.Option(help="HxW, when the signature leaves it unknown")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")] = False,
    build_context: Annotated[
        Path | None,
        typer.Option(help="docker: also write the image's build context (Dockerfile, model) to this new folder"),
    ] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="also confine convert and verify with bubblewrap (no network, read-only files); for untrusted "
            "models. Without it they still run in a child process under the EXPORTER_SANDBOX_* limits",
        ),
    ] = False,
) -> None:
    """Export a model folder to one modelFormat, verified, into a new model-export-* folder."""
    # Checked before the pipeline (and TensorFlow) loads: a typo is answered at once.
    from exporter.cli_request import check_model_path, format_from_flag, output_config, parse_flags
    from exporter.destinations import open_destination

    choice = format_from_flag(model_format)
    params = _param_pairs(param or [])
    request = parse_flags(choice.name, output, params)
    size = _input_size(input_size)
    check_model_path(model)
    for path, flag in ((images, "--images"), (labels, "--labels")):
        if path is not None and not path.exists():
            raise ExportError(Code.NOT_FOUND, f"{flag} {str(path)!r} does not exist")
    options = {"keep_context": build_context} if build_context is not None else {}
    # Opened once: a local path is resolved here, and the export writes where this check wrote,
    # even if a folder on the way is swapped for a link before staging.
    destination = open_destination(request, **options)
    destination.check()
    if choice.note:
        print(f"exporter: note: {choice.note}", file=sys.stderr)
    config = output_config(choice.name, output, params)
    from exporter.run import STAGES, export_model
    from exporter.sandbox import BUBBLEWRAP, LIMITS_ONLY, Sandbox
    from exporter.terminal import StageProgress, print_summary

    # Convert and verify always run in a child under the limits (a bomb ends as RESOURCE_EXHAUSTED,
    # a signal stops it at once); --sandbox adds bubblewrap's namespaces. Checked before anything loads.
    chosen_sandbox = Sandbox.from_environment(BUBBLEWRAP if sandbox else LIMITS_ONLY)
    if choice.name == "tf_js":
        # TensorFlow is not imported yet: without oneDNN's graph rewrites it converts here, not
        # in a second process (converters/tf_js/graph.py says why the rewrites must be off).
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    with native_logs_captured() as console:
        # The console writes to the real stderr: sys.stderr is the captured log by now, never a terminal.
        mode = "off" if as_json else "bar" if console.is_terminal else "lines"
        with StageProgress(STAGES, console, mode) as progress:

            def on_stage(stage: str, event: str) -> None:
                STOP_SIGNALS.check()
                progress.update(stage, event)

            result = export_model(
                model,
                config,
                images=images,
                labels=labels,
                input_size=size,
                progress=on_stage,
                destination=destination,
                sandbox=chosen_sandbox,
            )
    if as_json:
        print(
            json.dumps({"outputDir": result.output_dir, "seconds": result.seconds, "report": result.report}, indent=2)
        )
    else:
        print_summary(result)


@app.command()
def verify(
    export_dir: Annotated[Path, typer.Argument(help="an export folder (model-export-...)")],
    model: Annotated[Path, typer.Option(help="the source model folder or .keras/.h5 file")],
    images: Annotated[Path | None, typer.Option(help="held-out images, when the model folder has none")] = None,
    labels: Annotated[Path | None, typer.Option(help="labels file, when the model folder has no dict.txt")] = None,
    input_size: Annotated[str | None, typer.Option(help="HxW, when the signature leaves it unknown")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as JSON")] = False,
) -> None:
    """Run an existing export's verification again against its source model; ends with a PASS or
    FAIL line (exit status 0 or 1)."""
    from exporter.cli_request import check_model_path

    size = _input_size(input_size)
    if not export_dir.is_dir():
        raise ExportError(Code.NOT_FOUND, f"export folder {str(export_dir)!r} does not exist")
    check_model_path(model)
    from exporter.run import verify_export
    from exporter.terminal import print_checks

    try:
        with native_logs_captured():
            checks = verify_export(export_dir, model, images=images, labels=labels, input_size=size)
    except ExportError as error:
        if getattr(error, "check", None) is None:  # not a check that missed: the usual error line
            raise
        if as_json:
            print(json.dumps({"passed": False, "failed": error.check.as_dict(), "message": error.message}, indent=2))
        else:
            print(f"FAIL {export_dir}: {' '.join(error.message.split())}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(checks, indent=2))
    else:
        print_checks(str(export_dir), checks)
        print(f"PASS {export_dir}: every check is within its tolerance")


@app.command()
def predict(
    artifact: Annotated[
        Path,
        typer.Argument(help="model.tflite, an export folder (tflite, edgetpu_tflite, tf_js), or a serving SavedModel"),
    ],
    image: Annotated[list[Path], typer.Argument(help="image files (JPEG, PNG, ...)")],
    top_k: Annotated[int, typer.Option(min=1, help="how many labels to show per image")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print the predictions as JSON")] = False,
) -> None:
    """Classify images with an exported artifact (top-k labels and scores, and whether the scores
    are probabilities or logits, as the artifact states)."""
    from exporter.prediction import predict as run_predict
    from exporter.terminal import print_predictions

    with native_logs_captured():
        predictions = run_predict(artifact, image, top_k=top_k)
    print_predictions(predictions, as_json=as_json)


@app.command()
def formats(
    as_json: Annotated[bool, typer.Option("--json", help="print the table as JSON")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print the table as Markdown (the README's and docs/formats.md's)")
    ] = False,
) -> None:
    """The formats table: params, defaults, allowed values and destination of each modelFormat."""
    from exporter.terminal import formats_table

    if as_json:
        print(json.dumps(describe_formats(), indent=2))
    elif markdown:
        print(formats_markdown())
    else:
        formats_table(describe_formats())


app.command()(serve)
app.command()(worker)
app.command()(benchmark)
app.add_typer(models_app, name="models")
app.add_typer(operations_app, name="operations")


class SampleKind(str, enum.Enum):
    digits = "digits"
    colour_canary = "colour-canary"


@app.command("sample-model")
def sample_model(
    out_dir: Annotated[Path, typer.Argument(help="folder to write the model folder to")],
    size: Annotated[int, typer.Option(min=32, max=512, help="input height and width")] = 96,
    kind: Annotated[SampleKind, typer.Option(help="which sample model")] = SampleKind.digits,
    seed: Annotated[int, typer.Option(help="random seed (training is deterministic under it)")] = 0,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="do nothing when OUT_DIR already holds a model")
    ] = False,
) -> None:
    """Train a real sample model offline and write its model folder."""
    if if_missing and (out_dir / "manifest.json").exists():
        typer.echo(f"{out_dir} already holds a model; left as it is", err=True)
        return
    from exporter import sample_models

    typer.echo(f"training the {kind.value} sample model at {size}x{size} into {out_dir} ...", err=True)
    make = sample_models.make_digits_model if kind is SampleKind.digits else sample_models.make_colour_canary
    with native_logs_captured():
        manifest = make(out_dir, size=size, seed=seed)
    accuracy = manifest["training"]["heldout_accuracy"]
    typer.echo(f"wrote {out_dir} (held-out accuracy {accuracy:.1%})")


class Stopped(ExportError):
    """SIGTERM arrived: unwind like Ctrl-C, so the staging folder is removed on the way out."""

    def __init__(self, signum: int):
        super().__init__(Code.CANCELLED, f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM stop an export cleanly, even when a library swallows the exception.

    TensorFlow's converter runs Python callbacks (the representative dataset) under C++ that
    may swallow what the handler raises; the signal is remembered, and the progress callback
    raises it again at the next stage boundary, before anything is published.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum
        stop = Stopped(signum)
        request_stop(stop)  # kept where the pipeline sees it, should a library swallow the raise
        raise stop

    def check(self) -> None:
        if self.signum is not None:
            raise Stopped(self.signum)


STOP_SIGNALS = StopSignals()


# The modules of the optional extras (pyproject.toml), for the error a command meets without its extra.
EXTRA_OF_MODULE = {
    "fastapi": "service",
    "uvicorn": "service",
    "starlette": "service",
    "pydantic_settings": "service",
    "sqlalchemy": "service",
    "alembic": "service",
    "psycopg": "service",
    "celery": "fleet",
    "matplotlib": "benchmark",
    "paramiko": "benchmark",
    "psutil": "service",  # in the benchmark extra too
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    quiet_libraries()
    STOP_SIGNALS.install()
    try:
        status = typer.main.get_command(app).main(args=args, prog_name="exporter", standalone_mode=False)
        if isinstance(status, int) and status:  # a command's typer.Exit(n): verify's FAIL
            return status
    except ExportError as error:
        if debug:
            sys.stderr.write(DEBUG.get("native_log", ""))
            traceback.print_exc()
        return print_error(requested_stop() or error)
    except KeyboardInterrupt:
        print("exporter: CANCELLED: interrupted", file=sys.stderr)
        return 130
    except typer.Abort:
        print("exporter: CANCELLED: interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as error:  # usage errors of the command line itself
        text = error.format_message() if hasattr(error, "format_message") else str(error)
        print(f"exporter: INVALID_ARGUMENT: {text}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # a command whose extra is not installed
        if debug:
            traceback.print_exc()
        top = (error.name or "").split(".")[0]
        extra = EXTRA_OF_MODULE.get(top)
        if extra is None:
            print(f"exporter: INTERNAL: ModuleNotFoundError: {error}", file=sys.stderr)
            return 1
        print(
            f"exporter: FAILED_PRECONDITION: this command needs {top}, which comes with the {extra!r} extra: "
            f"pip install 'automl-export-engine[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except Exception as error:  # last resort: still one line, the traceback only on --debug
        if debug:
            traceback.print_exc()
        if requested_stop() is not None:  # a library's own error, raised where the stop landed
            return print_error(requested_stop())
        print(f"exporter: INTERNAL: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
