"""Reading a model folder: the SavedModel, its labels, its manifest and its images.

A model folder holds ``manifest.json`` (optional), ``dict.txt`` and the SavedModel (in
``saved_model/`` or at the top). The serving signature must have one 4-D float NHWC RGB input and
one output of class probabilities as wide as the labels; anything else is one clear error that
says what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from exporter.core.errors import Code, ExportError
from exporter.core.labels import parse_labels
from exporter.core.manifest import DISPLAY_NAME, DISPLAY_NAME_RULE, InputSpec, Manifest
from exporter.core.op_policy import check_saved_model_ops

SERVING_KEY = "serving_default"
# The manifest.json entries that name a path, each relative to the model folder.
MANIFEST_PATHS = ("saved_model", "labels", "calibration_images", "heldout_images")


@dataclass(frozen=True)
class ModelSource:
    """Everything the converters need to know about the model being exported."""

    root: Path
    saved_model_dir: Path
    display_name: str
    model_type: str
    labels: tuple[str, ...]
    input_key: str  # the serving signature's input name
    output_key: str  # the serving signature's output of class scores
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    calibration_dir: Path
    heldout_dir: Path  # the calibration folder when the model has no held-out images of their own
    heldout_from: str = "heldout"  # "heldout", or "calibration" when those stand in for them
    input_dtype: str = "float32"  # or "uint8": the signature takes raw pixels
    output_count: int = 1  # the signature's outputs; output_key is the one of class scores
    output_chosen_by: str = "the only output"  # how output_key was found among several
    converted_from: str | None = None  # the Keras file the SavedModel was made from, if any

    @property
    def plain_signature(self) -> bool:
        """One float32 input and one output: the signature can be converted as it is; otherwise
        converters call it through converters.signature.call_model."""
        return self.input_dtype == "float32" and self.output_count == 1

    @property
    def input_range(self) -> tuple[float, float]:
        """The smallest and largest value the model sees after normalizing 0..255 pixels."""
        lows = [(0 - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        highs = [(255 - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        return min(lows), max(highs)

    def content_digest(self) -> str:
        """``sha256:`` of the model's content: every SavedModel file (path and bytes) and the labels.

        The same model copied anywhere has the same digest; a changed weight or label changes it.
        """
        digest = hashlib.sha256()
        files = sorted(p for p in self.saved_model_dir.rglob("*") if p.is_file())
        for path in files:
            digest.update(path.relative_to(self.saved_model_dir).as_posix().encode() + b"\0")
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            digest.update(b"\0")
        digest.update("\n".join(self.labels).encode())
        return "sha256:" + digest.hexdigest()

    def describe(self) -> dict:
        """The model's part of export_report.json."""
        # Named by display name and content, never by where it lies on this machine.
        return {
            "displayName": self.display_name,
            "digest": self.content_digest(),
            "modelType": self.model_type,
            "labels": list(self.labels),
            "input": {
                "signatureKey": SERVING_KEY,
                "name": self.input_key,
                "dtype": self.input_dtype,
                "shape": [None, self.height, self.width, 3],
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "output": {
                "name": self.output_key,
                "shape": [None, len(self.labels)],
                "outputs": self.output_count,
                "chosenBy": self.output_chosen_by,
            },
            "verificationImages": self.verification_images(),
            **({"convertedFrom": self.converted_from} if self.converted_from else {}),
        }

    def verification_images(self) -> dict:
        """Which images the checks run on and how many are labelled (accuracy needs labels;
        agreement with the source does not)."""
        from exporter.core.images import list_images

        paths = list_images(self.heldout_dir) if self.heldout_dir.is_dir() else []
        labelled = sum(1 for p in paths if p.parent.name in self.labels)
        return {"from": self.heldout_from, "images": len(paths), "labelled": labelled}

    def require_images(self) -> None:
        """Refuse, before anything loads, an export that would have no images to verify it with."""
        from exporter.core.images import list_images

        if not any(folder.is_dir() and list_images(folder) for folder in (self.heldout_dir, self.calibration_dir)):
            raise ExportError(
                Code.FAILED_PRECONDITION,
                "no images to verify the export with: the model folder has none in its held-out or calibration "
                "folder (images/heldout, images/calibration); pass --images DIR, a folder of images of the "
                "model's classes (in <label>/ subfolders where the labels are known; unlabelled images are "
                "checked by agreement with the source model)",
            )


def _bad(message: str) -> ExportError:
    return ExportError(Code.INVALID_ARGUMENT, message)


def read_model(
    folder: str | Path,
    *,
    images: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    labels: str | Path | None = None,
) -> ModelSource:
    """Read and check a model folder.

    `labels` (a file, one label a line, anywhere) replaces the model folder's labels file.
    `images` replaces the manifest's image folders: a folder with ``calibration/`` and
    ``heldout/`` inside, or one folder of ``<label>/`` subfolders used for both (the caller's own
    folder: unlike the model folder's paths, it may be anywhere). `input_size`
    (height, width) is needed when the signature leaves the size unknown and the manifest does
    not give it.
    """
    root, manifest, saved_model_dir = _checked_folder(folder)
    display_name = manifest.display_name or root.name
    if not DISPLAY_NAME.match(display_name):
        where = "manifest.json display_name" if manifest.display_name else "the folder name"
        raise _bad(
            f"display name {display_name!r} (from {where}) does not follow AutoML's rule: "
            f"{DISPLAY_NAME_RULE}; set display_name in manifest.json"
        )
    labels = _read_labels(
        Path(labels).resolve() if labels is not None else root / manifest.labels, given=labels is not None
    )
    signature = _read_signature(saved_model_dir, labels, manifest.output)
    height, width = _input_size(signature.height, signature.width, manifest.input, input_size)
    mean, std = manifest.input.normalization()
    if signature.input_dtype == "uint8" and (list(mean), list(std)) != ([0.0] * 3, [1.0] * 3):
        raise _bad(
            f"the serving input {signature.input_key!r} is uint8, which takes raw 0..255 pixels: manifest.json "
            "input must say range 0..255 (the default) or nothing"
        )
    calibration_dir, heldout_dir = _image_folders(root, manifest, images)
    heldout_from = "heldout"
    if heldout_dir != calibration_dir and not _has_images(heldout_dir) and _has_images(calibration_dir):
        heldout_dir, heldout_from = calibration_dir, "calibration"
    return ModelSource(
        root=root,
        saved_model_dir=saved_model_dir,
        display_name=display_name,
        model_type=manifest.model_type,
        labels=labels,
        input_key=signature.input_key,
        output_key=signature.output_key,
        height=height,
        width=width,
        mean=tuple(mean),
        std=tuple(std),
        calibration_dir=calibration_dir,
        heldout_dir=heldout_dir,
        heldout_from=heldout_from,
        input_dtype=signature.input_dtype,
        output_count=signature.output_count,
        output_chosen_by=signature.chosen_by,
        converted_from=manifest.converted_from,
    )


def _has_images(folder: Path) -> bool:
    from exporter.core.images import list_images

    return folder.is_dir() and bool(list_images(folder))


def check_model_folder(folder: str | Path) -> None:
    """The checks a model folder must pass before anything copies or loads it: every path it leads
    to stays inside it, and its SavedModel holds only allowed operations (no TensorFlow needed)."""
    _checked_folder(folder)


def _checked_folder(folder: str | Path) -> tuple[Path, Manifest, Path]:
    """The model folder, its manifest and its SavedModel folder, confined and op-checked."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise ExportError(Code.NOT_FOUND, f"model folder {str(folder)!r} does not exist")
    _check_confined(root)
    manifest = _read_manifest(root)
    _check_manifest_paths(root, manifest)
    saved_model_dir = _find_saved_model(root, manifest)
    check_saved_model_ops(saved_model_dir)  # before anything loads the SavedModel, which is a program
    return root, manifest, saved_model_dir


# Confinement: a model folder may not lead outside itself, through a manifest path or a link, so
# that exporting it (or importing it into the service) reads nothing but what the folder holds.
# Refused as INVALID_ARGUMENT, like every other model folder that breaks the folder's rules
# (manifest schema, labels, signature): the folder as given is wrong and only changing it helps.
# The messages name the entry relative to the model folder and never say anything about what is
# outside it (where a link points, whether it exists, what it holds).


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def check_confined(folder: str | Path) -> None:
    """Every link under the model folder, at any depth, resolves inside it; nothing is a device,
    pipe or socket (which reading would block on or leak from)."""
    _check_confined(Path(folder).resolve())


def _check_confined(root: Path) -> None:
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError as error:
            where = f"{_relative(root, folder)}/" if folder != root else "the model folder"
            raise _bad(f"cannot list {where}: {error.strerror}") from None
        for entry in listed:
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = path.resolve()
                except (OSError, RuntimeError):  # a loop of links
                    raise _bad(f"{_relative(root, path)} is a link that never resolves") from None
                if not _inside(root, target):
                    raise _bad(f"{_relative(root, path)} is a link that leaves the model folder")
            elif entry.is_dir(follow_symlinks=False):
                folders.append(path)
            elif not entry.is_file(follow_symlinks=False):
                raise _bad(f"{_relative(root, path)} is neither a file nor a folder")


def _check_manifest_paths(root: Path, manifest: Manifest) -> None:
    for entry in MANIFEST_PATHS:
        value = getattr(manifest, entry)
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or not _inside(root, (root / path).resolve()):
            raise _bad(f"manifest.json {entry}: {json.dumps(value)} must be a path inside the model folder")


def _read_manifest(root: Path) -> Manifest:
    path = root / "manifest.json"
    if not path.exists():
        return Manifest()
    try:
        return Manifest.model_validate(json.loads(path.read_bytes()))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in error.errors())
        raise _bad(f"manifest.json does not fit the manifest schema: {problems}") from None
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, or nested past the parser
        raise _bad(f"manifest.json is not valid JSON: {error}") from None
    except OSError as error:
        raise _bad(f"manifest.json cannot be read: {error.strerror or error}") from None


def _find_saved_model(root: Path, manifest: Manifest) -> Path:
    for candidate in (root / manifest.saved_model, root):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    raise _bad(
        f"no SavedModel in the model folder: expected saved_model.pb in "
        f"{manifest.saved_model}/ or at the top of the folder"
    )


def _read_labels(path: Path, given: bool = False) -> tuple[str, ...]:
    if given and not path.is_file():
        raise ExportError(Code.NOT_FOUND, f"labels file {path.name!r} does not exist")
    if not path.is_file():
        raise _bad(f"no labels: expected {path.name} (one label a line) in the model folder, or pass --labels FILE")
    try:
        labels = tuple(parse_labels(path.read_text(encoding="utf-8")))
    except UnicodeDecodeError as error:
        raise _bad(f"{path.name} is not UTF-8 text: byte {error.start} cannot be read") from None
    except OSError as error:
        raise _bad(f"{path.name} cannot be read: {error.strerror or error}") from None
    if len(labels) < 2:
        raise _bad(f"{path.name} must list at least 2 labels, one a line; found {len(labels)}")
    if len(set(labels)) != len(labels):
        raise _bad(f"{path.name} lists a label more than once")
    return labels


# The input types a serving signature may take: float32 values, or uint8 pixels (the usual form
# of TF Hub and Keras models with a Cast or Rescaling in the graph).
INPUT_DTYPES = ("float32", "uint8")
# Output names taken for the class scores when several outputs are as wide as the labels, in order.
SCORE_OUTPUT_NAMES = ("probabilities", "probs", "scores", "predictions", "logits")


@dataclass(frozen=True)
class _Signature:
    input_key: str
    input_dtype: str
    height: int | None
    width: int | None
    output_key: str
    output_count: int
    chosen_by: str


def _read_signature(saved_model_dir: Path, labels: tuple[str, ...], wanted_output: str | None) -> _Signature:
    """The serving signature's image input and its output of class scores."""
    from exporter.core.saved_model_proto import read_signatures

    signatures = read_signatures(saved_model_dir)
    if SERVING_KEY not in signatures:
        found = ", ".join(sorted(k for k in signatures if not k.startswith("__"))) or "none"
        raise _bad(f"the SavedModel has no {SERVING_KEY!r} signature; found: {found}")
    inputs, outputs = signatures[SERVING_KEY]
    if len(inputs) != 1:
        raise _bad(f"the serving signature must have one image input; found {len(inputs)}: {', '.join(sorted(inputs))}")
    ((input_key, (input_dtype, input_shape)),) = inputs.items()
    if input_dtype not in INPUT_DTYPES or input_shape is None or len(input_shape) != 4 or input_shape[3] != 3:
        raise _bad(
            "the serving input must be a 4-D float32 or uint8 NHWC RGB image [batch, height, width, 3]; "
            f"found {input_key!r}: {input_dtype} {_shape_text(input_shape)}"
        )
    output_key, chosen_by = _scores_output(outputs, len(labels), wanted_output)
    height, width = input_shape[1], input_shape[2]
    return _Signature(
        input_key,
        input_dtype,
        height if height > 0 else None,
        width if width > 0 else None,
        output_key,
        len(outputs),
        chosen_by,
    )


def _scores_output(outputs: dict, label_count: int, wanted: str | None) -> tuple[str, str]:
    """(the output of class scores, how it was chosen): the one manifest.json names, the only
    output, the only one as wide as the labels, or the first of SCORE_OUTPUT_NAMES among those."""

    def fits(name: str) -> bool:
        dtype, shape = outputs[name]
        return (
            dtype in ("float32", "float16", "half")
            and shape is not None
            and len(shape) == 2
            and shape[1] == label_count
        )

    def shapes(names) -> str:
        return ", ".join(f"{n!r}: {outputs[n][0]} {_shape_text(outputs[n][1])}" for n in sorted(names))

    expected = f"[batch, {label_count}] (one score per label in dict.txt)"
    if wanted is not None:
        if wanted not in outputs:
            raise _bad(
                f"manifest.json output {wanted!r} is not an output of the serving signature; found {shapes(outputs)}"
            )
        if not fits(wanted):
            raise _bad(f"manifest.json output {wanted!r} must be float {expected}; found {shapes([wanted])}")
        return wanted, "manifest.json output"
    candidates = [name for name in outputs if fits(name)]
    if len(outputs) == 1 and candidates:
        return candidates[0], "the only output"
    if len(candidates) == 1:
        return candidates[0], f"the only output as wide as the {label_count} labels"
    named = [n for n in SCORE_OUTPUT_NAMES if n in candidates]
    if named:
        return named[0], f"its name, among outputs as wide as the labels: {', '.join(sorted(candidates))}"
    if not candidates:
        raise _bad(f"the serving output of class scores must be float {expected}; found {shapes(outputs)}")
    raise _bad(
        f"the serving signature has several outputs of {expected}: {', '.join(sorted(candidates))}; name the "
        "one of class scores in manifest.json output"
    )


def _shape_text(shape: list[int] | None) -> str:
    if shape is None:
        return "of unknown rank"
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def _input_size(
    height: int | None, width: int | None, spec: InputSpec, given: tuple[int, int] | None
) -> tuple[int, int]:
    for source, (h, w) in (("--input-size", given or (None, None)), ("manifest.json input", (spec.height, spec.width))):
        if h is None and w is None:
            continue
        if (height is not None and h != height) or (width is not None and w != width):
            raise _bad(f"{source} says {h}x{w} but the signature fixes {height or '?'}x{width or '?'}")
        height, width = h, w
        break
    if height is None or width is None:
        raise _bad(
            "the signature leaves the input height and width unknown: give them with "
            "--input-size HxW or manifest.json input.height and input.width"
        )
    return height, width


def _image_folders(root: Path, manifest: Manifest, images: str | Path | None) -> tuple[Path, Path]:
    if images is None:
        return root / manifest.calibration_images, root / manifest.heldout_images
    folder = Path(images).resolve()
    if not folder.is_dir():
        raise ExportError(Code.NOT_FOUND, f"images folder {str(images)!r} does not exist")
    if (folder / "calibration").is_dir() and (folder / "heldout").is_dir():
        return folder / "calibration", folder / "heldout"
    return folder, folder
