"""Confined model folders: every path a model folder leads to stays inside it.

The hostile folders are built for real from a copy of the canary model. A refusal names the entry
relative to the model folder and says nothing about what lies outside it.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError
from exporter.core.manifest import Manifest
from exporter.core.model_source import MANIFEST_PATHS, check_model_folder, read_model

OUTSIDE_LABELS = "red\nyellow\ngreen\ncyan\nblue\nmagenta\n"  # would be read happily if followed


@pytest.fixture
def model(canary_model, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(canary_model, folder)
    return folder


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the model folder, holding what a hostile model folder points at."""
    folder = tmp_path / "outside-secret-place"
    folder.mkdir()
    (folder / "labels.txt").write_text(OUTSIDE_LABELS)
    return folder


def set_manifest(folder: Path, **entries) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **entries}))


def refused(folder: Path, outside: Path | None = None) -> str:
    with pytest.raises(ExportError) as raised:
        read_model(folder)
    error = raised.value
    assert error.code is Code.INVALID_ARGUMENT, error
    assert str(folder) not in error.message and str(folder.parent) not in error.message
    if outside is not None:
        assert outside.name not in error.message
    assert "found" not in error.message  # no counts of anything read
    return error.message


def test_saved_model_linked_to_a_folder_outside(model, outside):
    shutil.move(model / "saved_model", outside / "saved_model")
    (model / "saved_model").symlink_to(outside / "saved_model", target_is_directory=True)
    assert refused(model, outside) == "saved_model is a link that leaves the model folder"


def test_labels_at_an_absolute_path(model):
    set_manifest(model, labels="/etc/passwd")
    message = refused(model)
    assert message == 'manifest.json labels: "/etc/passwd" must be a path inside the model folder'
    # The path appears once, where the manifest's author wrote it; nothing of the file does.
    assert message.count("/etc/passwd") == 1 and "root" not in message


def test_labels_climbing_out(model, outside):
    shutil.copy(outside / "labels.txt", model.parent / "outside.txt")
    set_manifest(model, labels="../outside.txt")
    assert refused(model, outside) == 'manifest.json labels: "../outside.txt" must be a path inside the model folder'


@pytest.mark.parametrize("entry", MANIFEST_PATHS)
def test_every_manifest_path_is_confined(model, entry):
    set_manifest(model, **{entry: "images/../../elsewhere"})
    assert refused(model).startswith(f'manifest.json {entry}: "images/../../elsewhere" must be a path inside')


def test_the_manifest_paths_are_every_path_entry_of_the_manifest():
    """A new manifest entry that names a path must join MANIFEST_PATHS, or it escapes the check."""
    # output names a signature output; converted_from is a note of the file the engine converted.
    not_paths = {"display_name", "model_type", "input", "training", "output", "converted_from"}
    assert set(Manifest.model_fields) - not_paths == set(MANIFEST_PATHS)


def test_labels_linked_to_a_file_outside(model, outside):
    (model / "dict.txt").unlink()
    (model / "dict.txt").symlink_to(outside / "labels.txt")
    assert refused(model, outside) == "dict.txt is a link that leaves the model folder"


def test_image_folder_linked_to_etc(model):
    shutil.rmtree(model / "images" / "calibration")
    (model / "images" / "calibration").symlink_to("/etc", target_is_directory=True)
    message = refused(model)
    assert message == "images/calibration is a link that leaves the model folder"
    assert "/etc" not in message and "passwd" not in message


def test_image_file_linked_outside(model, outside):
    image = sorted((model / "images" / "heldout").rglob("*.png"))[0]
    shutil.move(image, outside / "image.png")
    image.symlink_to(outside / "image.png")
    relative = image.relative_to(model).as_posix()
    assert refused(model, outside) == f"{relative} is a link that leaves the model folder"


def test_a_relative_link_that_climbs_out_and_back_in_is_fine_but_one_that_stays_out_is_not(model, outside):
    (model / "dict.txt").rename(model / "labels.txt")
    (model / "dict.txt").symlink_to(Path("..") / model.name / "labels.txt")
    read_model(model)
    (model / "dict.txt").unlink()
    (model / "dict.txt").symlink_to(Path("..") / outside.name / "labels.txt")
    assert refused(model, outside) == "dict.txt is a link that leaves the model folder"


def test_links_that_stay_inside_are_allowed(model):
    (model / "labels").mkdir()
    (model / "dict.txt").rename(model / "labels" / "dict.txt")
    (model / "dict.txt").symlink_to(Path("labels") / "dict.txt")
    shutil.rmtree(model / "images" / "heldout")
    (model / "images" / "heldout").symlink_to("calibration", target_is_directory=True)
    (model / "alias").symlink_to(model / "images", target_is_directory=True)  # absolute, but inside
    source = read_model(model)
    assert source.labels == ("red", "yellow", "green", "cyan", "blue", "magenta")
    assert source.heldout_dir == model.resolve() / "images" / "heldout"


def test_a_loop_of_links_is_refused(model):
    (model / "a").symlink_to("b")
    (model / "b").symlink_to("a")
    assert refused(model) in ("a is a link that never resolves", "b is a link that never resolves")


def test_a_pipe_is_refused(model):
    os.mkfifo(model / "dict.txt.fifo")
    assert refused(model) == "dict.txt.fifo is neither a file nor a folder"


def test_the_service_check_confines_too(model, outside):
    (model / "dict.txt").unlink()
    (model / "dict.txt").symlink_to(outside / "labels.txt")
    with pytest.raises(ExportError) as raised:
        check_model_folder(model)
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert raised.value.message == "dict.txt is a link that leaves the model folder"


# --- the service's import ---------------------------------------------------------------------


@pytest.fixture
def service(tmp_path):
    from exporter.service.settings import ServiceSettings

    imports = tmp_path / "imports"
    imports.mkdir()
    from exporter.service.store import Store

    settings = ServiceSettings(data_dir=tmp_path / "service-data", import_roots=[imports], _env_file=None)
    settings.data_dir.mkdir()
    store = Store(settings.store_url)
    store.migrate()
    return store, settings, imports


def import_folder(service, folder: Path, model_id: str):
    from exporter.service.models import ImportModelRequest, import_model

    store, settings, _ = service
    request = ImportModelRequest(source_uri=str(folder), model_id=model_id)
    return import_model(store, settings, "projects/p/locations/us-central1", request)


def stored(settings) -> list[str]:
    folder = settings.models_dir / "p" / "us-central1"  # models are stored per project and location
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_import_refuses_a_link_out_and_stores_nothing(service, canary_model, outside):
    store, settings, imports = service
    folder = imports / "linked"
    shutil.copytree(canary_model, folder)
    (folder / "dict.txt").unlink()
    (folder / "dict.txt").symlink_to(outside / "labels.txt")
    with pytest.raises(ExportError) as raised:
        import_folder(service, folder, "linked")
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert raised.value.message == "dict.txt is a link that leaves the model folder"
    assert stored(settings) == []
    assert store.get_model("projects/p/locations/us-central1/models/linked") is None


def test_import_keeps_inside_links_as_links(service, canary_model):
    _, settings, imports = service
    folder = imports / "inside"
    shutil.copytree(canary_model, folder)
    (folder / "dict.txt").rename(folder / "labels.txt")
    (folder / "dict.txt").symlink_to("labels.txt")
    row = import_folder(service, folder, "inside")
    copy = Path(row.path)
    assert stored(settings) == ["inside"] and copy.parent == settings.models_dir / "p" / "us-central1"
    assert (copy / "dict.txt").is_symlink() and os.readlink(copy / "dict.txt") == "labels.txt"
    assert read_model(copy).labels[0] == "red"


def test_import_refuses_an_absolute_link_it_could_not_keep(service, canary_model):
    _, settings, imports = service
    folder = imports / "absolute"
    shutil.copytree(canary_model, folder)
    (folder / "dict.txt").rename(folder / "labels.txt")
    (folder / "dict.txt").symlink_to(folder / "labels.txt")  # inside, so the folder itself passes
    read_model(folder)
    with pytest.raises(ExportError) as raised:
        import_folder(service, folder, "absolute")
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert raised.value.message.startswith("dict.txt is a link by absolute path")
    assert stored(settings) == []


def test_the_copy_never_follows_a_folder_swapped_for_a_link(canary_model, outside, tmp_path, monkeypatch):
    """The folder was a folder when listed and is a link when opened: refused, nothing read through it."""
    from exporter.service import models

    source = tmp_path / "source"
    shutil.copytree(canary_model, source)
    shutil.rmtree(source / "images")
    (source / "images").symlink_to(outside, target_is_directory=True)
    real_stat = os.stat

    def listed_as_a_folder(path, *, dir_fd=None, follow_symlinks=True):
        if path == "images" and dir_fd is not None:
            return real_stat(outside)  # what it was when the check looked
        return real_stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(os, "stat", listed_as_a_folder)
    target = tmp_path / "copy"
    with pytest.raises(ExportError) as raised:
        models.copy_without_following(source, target)
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert raised.value.message.startswith("cannot copy images from the model folder")
    assert not (target / "images" / "labels.txt").exists()
