"""Hypothesis properties of the request contract and the model folder reader.

Whatever JSON arrives, ``parse_export_body`` and ``parse_output_config`` answer an ExportRequest
or INVALID_ARGUMENT with field violations, never another exception. Whatever a model folder
holds (manifest, labels, files, links in or out), ``read_model`` answers a ModelSource or an
ExportError, never another exception, and writes nothing outside the folder.
``FUZZ_EXAMPLES`` sets the examples per property (100 by default here).
"""

import json
import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.errors import Code, ExportError
from exporter.core.formats import FORMATS
from exporter.core.model_source import MANIFEST_PATHS, ModelSource, read_model
from exporter.core.request import ExportRequest, parse_export_body, parse_output_config

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=30,
)
format_names = st.sampled_from(sorted(row.name for row in FORMATS)) | st.text(max_size=20)
param_values = st.sampled_from(["uint8", "float16", "none", "nvidia", "x86_64", "auto", ""]) | st.text(max_size=20)
# Configs shaped like the real thing, with a wrong part here and there.
output_configs = st.fixed_dictionaries(
    {},
    optional={
        "modelFormat": format_names | json_values,
        "gcsDestination": st.fixed_dictionaries({}, optional={"outputUriPrefix": st.text(max_size=60) | json_values})
        | json_values,
        "gcrDestination": st.fixed_dictionaries({}, optional={"outputUri": st.text(max_size=60) | json_values})
        | json_values,
        "params": st.dictionaries(st.text(max_size=20), param_values | json_values, max_size=4) | json_values,
    },
)
bodies = json_values | st.fixed_dictionaries({}, optional={"outputConfig": output_configs | json_values})


def invalid_argument(error: ExportError) -> None:
    assert error.code is Code.INVALID_ARGUMENT, error
    assert error.violations, error
    assert all(v.field and v.description for v in error.violations), error


@PROPERTY
@given(bodies)
def test_any_export_body_is_a_request_or_invalid_argument(body):
    try:
        assert isinstance(parse_export_body(body), ExportRequest)
    except ExportError as error:
        invalid_argument(error)


@PROPERTY
@given(output_configs | json_values)
def test_any_output_config_is_a_request_or_invalid_argument(config):
    try:
        assert isinstance(parse_output_config(config), ExportRequest)
    except ExportError as error:
        invalid_argument(error)


# Model folders: a manifest (JSON, or bytes), dict.txt bytes, and files and links in the folder.
names = st.sampled_from(["saved_model", "dict.txt", "labels.txt", "images", "a", "b/c", "manifest.json"])
link_targets = st.sampled_from(["..", "../outside", "../outside/secret", "/", "a", "missing", "saved_model", "."])
manifests = (
    st.fixed_dictionaries(
        {},
        optional={
            **{
                entry: st.sampled_from(["..", "/etc", "a", "saved_model", "dict.txt"]) | json_values
                for entry in MANIFEST_PATHS
            },
            "display_name": st.text(max_size=30) | json_values,
            "model_type": st.sampled_from(["mobile-versatile-1", "cloud"]) | json_values,
            "input": json_values,
        },
    ).map(lambda m: json.dumps(m).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)
folders = st.fixed_dictionaries(
    {
        "manifest": st.none() | manifests,
        "labels": st.none()
        | st.binary(max_size=300)
        | st.lists(st.text(max_size=15), max_size=6).map(
            lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
        ),
        "files": st.lists(st.tuples(names, st.binary(max_size=50)), max_size=3),
        "links": st.lists(st.tuples(names, link_targets), max_size=3),
        "saved_model": st.booleans(),
    }
)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(folder.rglob("*"))
    }


def build(model: Path, spec: dict, canary: Path) -> None:
    if spec["saved_model"]:
        shutil.copytree(canary / "saved_model", model / "saved_model")
    if spec["manifest"] is not None:
        (model / "manifest.json").write_bytes(spec["manifest"])
    if spec["labels"] is not None:
        (model / "dict.txt").write_bytes(spec["labels"])
    for name, content in spec["files"]:
        path = model / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        except (IsADirectoryError, FileExistsError, NotADirectoryError):
            pass
    for name, target in spec["links"]:
        path = model / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        except (FileExistsError, NotADirectoryError):
            pass


def test_any_model_folder_is_a_source_or_an_export_error(tmp_path_factory, canary_model):
    @PROPERTY
    @given(folders)
    def reads(spec):
        base = tmp_path_factory.mktemp("folder")
        model, outside = base / "model", base / "outside"
        model.mkdir()
        outside.mkdir()
        (outside / "secret").write_bytes(b"not for the model")
        build(model, spec, canary_model)
        before_outside, before_base = snapshot(outside), sorted(p.name for p in base.iterdir())
        try:
            assert isinstance(read_model(model), ModelSource)
        except ExportError as error:
            assert isinstance(error.code, Code) and error.message
        assert snapshot(outside) == before_outside
        assert sorted(p.name for p in base.iterdir()) == before_base
        shutil.rmtree(base)

    reads()
