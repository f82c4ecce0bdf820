"""The model manifest (``manifest.json`` in a model folder): what the SavedModel cannot say.

Its schema is written down in docs/models.md; keep the two in step.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from exporter.core.model_types import MODEL_TYPES

# AutoML's display-name rule: it becomes part of the export folder's name.
DISPLAY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
DISPLAY_NAME_RULE = "at most 32 characters of [A-Za-z0-9_], starting with a letter"

# The named input ranges, as (mean, std) applied to 0..255 pixels: model_input = (pixel-mean)/std.
INPUT_RANGES = {
    "0..255": (0.0, 1.0),
    "0..1": (0.0, 255.0),
    "-1..1": (127.5, 127.5),
}
DEFAULT_INPUT_RANGE = "0..255"

Side = Annotated[int, Field(ge=1, le=4096)]
Triple = Annotated[list[float], Field(min_length=3, max_length=3)]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    height: Side | None = None
    width: Side | None = None
    range: Literal["0..255", "0..1", "-1..1"] | None = None
    mean: Triple | None = None
    std: Triple | None = None

    @model_validator(mode="after")
    def _one_normalization(self) -> InputSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.range is not None and self.mean is not None:
            raise ValueError("give either range or mean and std, not both")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("every std must be positive")
        return self

    def normalization(self) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) on 0..255 RGB pixels."""
        if self.mean is not None:
            return list(self.mean), list(self.std)
        mean, std = INPUT_RANGES[self.range or DEFAULT_INPUT_RANGE]
        return [mean] * 3, [std] * 3


class Manifest(BaseModel):
    """``manifest.json``; every path is relative to the model folder."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = None  # default: the model folder's name
    model_type: Literal[MODEL_TYPES] = "mobile-versatile-1"  # type: ignore[valid-type]
    saved_model: str = "saved_model"
    labels: str = "dict.txt"
    output: str | None = None  # the signature's output of class scores, where it has several
    input: InputSpec = Field(default_factory=InputSpec)
    calibration_images: str = "images/calibration"
    heldout_images: str = "images/heldout"
    training: dict[str, Any] | None = None  # free-form notes of how the model was trained
    converted_from: str | None = None  # the Keras file the engine made this folder's SavedModel from
