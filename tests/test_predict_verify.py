"""`exporter predict` and `exporter verify` on real exports."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from converters.tflite.converter import convert_to_tflite
from exporter.core.errors import Code, ExportError
from exporter.core.images import list_images
from exporter.core.model_source import read_model
from exporter.prediction import predict
from exporter.run import verify_export


def heldout(canary_model, count=12):
    files = list_images(canary_model / "images" / "heldout")
    return files[:: max(1, len(files) // count)]


@pytest.mark.parametrize("mode", ["uint8", "float32"])
def test_predict_with_a_lone_tflite_file(tflite_exports, canary_model, tmp_path, mode):
    alone = tmp_path / "model.tflite"
    shutil.copy(Path(tflite_exports["canary", mode][1].output_dir) / "model.tflite", alone)
    files = heldout(canary_model)
    predictions = predict(alone, files, top_k=2)
    assert [p.top[0][0] for p in predictions] == [f.parent.name for f in files]
    for p in predictions:
        assert len(p.top) == 2 and p.top[0][1] >= p.top[1][1]


def test_predict_with_the_serving_saved_model(serving_exports, canary_model):
    folder, _ = serving_exports["canary"]
    files = heldout(canary_model)
    assert [p.top[0][0] for p in predict(folder, files)] == [f.parent.name for f in files]


def test_predict_refuses_a_tflite_without_metadata(canary_model, tmp_path):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(convert_to_tflite(read_model(canary_model), "float32", 1))
    with pytest.raises(ExportError) as raised:
        predict(bare, heldout(canary_model, 1))
    assert raised.value.code is Code.FAILED_PRECONDITION and "no embedded TFLite metadata" in raised.value.message


def test_predict_names_a_missing_image(tflite_exports, tmp_path):
    with pytest.raises(ExportError) as raised:
        predict(tflite_exports["canary", "uint8"][1].output_dir, [tmp_path / "none.png"])
    assert raised.value.code is Code.NOT_FOUND


def test_verify_passes_on_a_good_export(tflite_exports, canary_model):
    checks = verify_export(tflite_exports["canary", "uint8"][1].output_dir, canary_model)
    assert checks["verification"]["passed"]
    assert checks["verification"]["agreeing"] == checks["verification"]["decided"] == 300


def test_verify_catches_an_export_that_does_not_fit_its_source(tflite_exports, canary_model, model_copy):
    """A source whose manifest scales the channels differently from the 0..1 the uint8 artifact folded
    in: the same raw pixels reach the two as different colours. (A uniform change such as 0..255 is
    not enough: the canary's ReLU layers answer 255-fold inputs with the same top-1, and the artifact
    takes raw pixels whatever the manifest says.)"""
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["input"]["range"]
    manifest["input"].update(mean=[0.0, 0.0, 0.0], std=[255.0, 510.0, 127.5])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError) as raised:
        verify_export(tflite_exports["canary", "uint8"][1].output_dir, folder)
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert "top-1 differs from the source" in raised.value.message


def test_verify_needs_an_export_report(canary_model, tmp_path):
    with pytest.raises(ExportError) as raised:
        verify_export(tmp_path, canary_model)
    assert raised.value.code is Code.NOT_FOUND and "export_report.json" in raised.value.message


@pytest.mark.slow
def test_predict_and_verify_from_the_command_line(tflite_exports, canary_model):
    export = tflite_exports["canary", "uint8"][1].output_dir
    files = heldout(canary_model, 3)
    result = run_cli("predict", export, *map(str, files), "--top-k", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert [p["top"][0]["label"] for p in json.loads(result.stdout)] == [f.parent.name for f in files]
    result = run_cli("verify", export, "--model", str(canary_model), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verification"]["passed"]


def test_labels_with_spaces_survive_the_round_trip(canary_model, tmp_path):
    """dict.txt is one label a line: a label may hold spaces, in the model and in predictions."""
    from converters.tflite.metadata import read_metadata
    from exporter.run import export_model

    model = tmp_path / "spaced"
    shutil.copytree(canary_model, model)
    spaced = [f"deep {label} hue" for label in (model / "dict.txt").read_text().split()]
    (model / "dict.txt").write_text("\n".join(spaced) + "\n")
    for split in ("calibration", "heldout"):  # image folders are named by label
        for label in (model / "images" / split).iterdir():
            label.rename(label.with_name(f"deep {label.name} hue"))
    result = export_model(
        model,
        {
            "modelFormat": "tflite",
            "params": {"quantization": "float32"},
            "gcsDestination": {"outputUriPrefix": str(tmp_path / "out")},
        },
    )
    exported = Path(result.output_dir)
    assert read_metadata((exported / "model.tflite").read_bytes())["labels"] == spaced
    assert (exported / "dict.txt").read_text().splitlines() == spaced
    files = list_images(model / "images" / "heldout")[::25]
    assert [p.top[0][0] for p in predict(exported / "model.tflite", files)] == [f.parent.name for f in files]


def mediapipe_reading(model_bytes: bytes) -> dict:
    """The embedded metadata as MediaPipe's generated schema classes read it (predict's former path)."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
    from mediapipe.tasks.metadata import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    (entry,) = [
        model.Metadata(i) for i in range(model.MetadataLength()) if model.Metadata(i).Name() == b"TFLITE_METADATA"
    ]
    raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    found = meta.ModelMetadata.GetRootAsModelMetadata(raw, 0)
    subgraph = found.SubgraphMetadata(0)
    unit = subgraph.InputTensorMetadata(0).ProcessUnits(0)
    assert unit.OptionsType() == meta.ProcessUnitOptions.NormalizationOptions
    normalization = meta.NormalizationOptions()
    normalization.Init(unit.Options().Bytes, unit.Options().Pos)
    return {
        "raw": raw,
        "name": found.Name().decode(),
        "mean": [float(normalization.Mean(i)) for i in range(normalization.MeanLength())],
        "std": [float(normalization.Std(i)) for i in range(normalization.StdLength())],
        "output_name": subgraph.OutputTensorMetadata(0).Name().decode(),
    }


@pytest.mark.parametrize("mode", ["uint8", "float32"])
def test_the_flatbuffers_reader_reads_what_mediapipe_reads(tflite_exports, digits_model, mode):
    from converters.tflite.metadata import SCORES_BY_OUTPUT_NAME, read_metadata
    from exporter.core.tflite_metadata_reader import metadata_buffer, read_tflite_metadata

    model_bytes = (Path(tflite_exports["digits", mode][1].output_dir) / "model.tflite").read_bytes()
    expected = mediapipe_reading(model_bytes)
    found = read_tflite_metadata(model_bytes)
    assert metadata_buffer(model_bytes) == expected["raw"]
    assert found["name"] == expected["name"] == read_model(digits_model).display_name
    assert found["mean"] == expected["mean"] and len(found["mean"]) == 3
    assert found["std"] == expected["std"] and len(found["std"]) == 3
    assert found["scores"] == SCORES_BY_OUTPUT_NAME[expected["output_name"]]
    assert found["labels"] == list(read_model(digits_model).labels)
    assert read_metadata(model_bytes) == found


def test_the_reader_finds_a_buffer_stored_outside_the_flatbuffer(tflite_exports):
    """Models over 2 GB keep buffers after the flatbuffer (Buffer.offset and size, from the file's
    start): the same metadata, moved there, reads the same."""
    import io
    import zipfile

    import flatbuffers
    from mediapipe.tasks.metadata import schema_py_generated as schema

    from exporter.core.tflite_metadata_reader import read_tflite_metadata

    model_bytes = (Path(tflite_exports["digits", "uint8"][1].output_dir) / "model.tflite").read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    (entry,) = [m for m in model.metadata if m.name == b"TFLITE_METADATA"]
    moved = model.buffers[entry.buffer]
    raw = bytes(moved.data)

    def packed(offset: int) -> bytes:
        moved.data, moved.offset, moved.size = None, offset, len(raw)
        builder = flatbuffers.Builder(len(model_bytes))
        builder.Finish(model.Pack(builder), b"TFL3")
        return bytes(builder.Output())

    head = packed(1 << 40)  # any offset > 1 gives the flatbuffer its size: then point just past it
    head = packed(len(head))
    assert moved.offset == len(head)
    moved_model = io.BytesIO(head + raw)
    with zipfile.ZipFile(moved_model, "a") as archive, zipfile.ZipFile(io.BytesIO(model_bytes)) as labels:
        archive.writestr("dict.txt", labels.read("dict.txt"))
    assert read_tflite_metadata(moved_model.getvalue()) == read_tflite_metadata(model_bytes)


def test_predict_on_a_tflite_imports_neither_mediapipe_nor_tensorflow(tflite_exports, canary_model):
    model = Path(tflite_exports["canary", "uint8"][1].output_dir) / "model.tflite"
    files = [str(f) for f in heldout(canary_model, 3)]
    script = (
        "import sys\n"
        "from exporter.prediction import predict\n"
        f"found = [p.top[0][0] for p in predict({str(model)!r}, {files!r})]\n"
        "assert found == sys.argv[1:], found\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mediapipe', 'tensorflow'))\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *(Path(f).parent.name for f in files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def _launch(argv: list[str], entry: str) -> subprocess.CompletedProcess:
    """argv run through `entry` (exporter.launcher, the console script, or exporter.cli) in a fresh process;
    stderr's last line lists the heavy modules the command imported."""
    script = (
        "import sys\n"
        f"from {entry} import main\n"
        "status = main(sys.argv[1:])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'pydantic', 'rich', 'tensorflow', 'converters'})\n"
        "print('imported:', ','.join(heavy), file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra", [[], ["--json"], ["--top-k=2"]])
def test_the_console_scripts_predict_answers_as_the_full_command_line_does(tflite_exports, canary_model, extra):
    """The console script parses predict's plain form itself, without typer, pydantic or rich; what
    it prints is what the typer command prints for the same arguments."""
    model = str(Path(tflite_exports["canary", "uint8"][1].output_dir) / "model.tflite")
    argv = ["predict", model, *map(str, heldout(canary_model, 3)), *extra]
    fast, full = _launch(argv, "exporter.launcher"), _launch(argv, "exporter.cli")
    assert fast.returncode == full.returncode == 0, fast.stderr + full.stderr
    assert fast.stdout == full.stdout and fast.stdout.strip()
    assert fast.stderr.splitlines()[-1] == "imported: "
    assert "typer" in full.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--top-k", "0"], "INVALID_ARGUMENT"),  # typer's bound (min 1) answers, with its message
        (["--top", "2"], "INVALID_ARGUMENT"),  # no abbreviations: typer names the unknown flag
        (["-h"], "Usage: exporter predict"),
    ],
)
def test_what_the_fast_form_does_not_parse_goes_to_the_full_command_line(tflite_exports, canary_model, argv, expected):
    model = str(Path(tflite_exports["canary", "uint8"][1].output_dir) / "model.tflite")
    image = str(heldout(canary_model, 1)[0])
    done = _launch(["predict", model, image, *argv], "exporter.launcher")
    assert expected in done.stdout + done.stderr
    assert "typer" in done.stderr.splitlines()[-1]


def test_the_fast_predict_takes_the_typer_commands_arguments():
    """One set of arguments: the argparse form names the typer command's parameters and flags."""
    import typer

    from exporter.cli import app
    from exporter.launcher import _predict_arguments

    command = typer.main.get_command(app).commands["predict"]
    typer_names = {param.name: sorted(param.opts) for param in command.params if param.name != "help"}
    parsed = _predict_arguments(["a.tflite", "b.png"])
    assert set(vars(parsed)) == set(typer_names)
    flags = {name: opts for name, opts in typer_names.items() if opts[0].startswith("-")}
    assert flags == {"top_k": ["--top-k"], "as_json": ["--json"]}
