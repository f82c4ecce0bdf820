"""uint8 within the budget on every trained instance, not one: each family the quantization tests
use, trained under three seeds, exports to uint8 with the default budget and remedies, its
accuracy within one point of the source's; the remedy that passed is recorded.

The suite trains the small instances (the logits tf.Module at 96x96, MobileNetV3Small at 32x32,
four epochs). EfficientNetB0 runs with --zoo (`make zoo-test`) at the issue's size, 96x96 and four
epochs, where the integer-only remedies (edgetpu_tflite's) are measured as well: the instance CI
affords (32x32, two epochs: 71.4%, 75.6% and 76.1% held out) is too weak a model to hold to the budget. Its
three seeded instances missed it after every remedy (33, 43 and 16 of about 355 decided images
flipped, 7 allowed); such a test would test the short training, not the engine.
"""

import json
from pathlib import Path

import pytest

import zoo
from exporter.failed_export import ExportFailed
from exporter.run import export_model

SUITE_FAMILIES = ("tf_module_logits", "mobilenet_v3_small_32")
FULL_SIZE = "efficientnet_b0_e4"
ACCURACY_POINTS = 0.01  # the artifact's held-out accuracy may be at most one point below the source's


def tflite_uint8(destination: Path, **params) -> dict:
    return {
        "modelFormat": "tflite",
        "gcsDestination": {"outputUriPrefix": str(destination)},
        "params": {"quantization": "uint8", **params},
    }


def exported_uint8(model: Path, destination: Path, **params) -> tuple[dict, dict]:
    """(verification check, tflite_metadata.json's quantization) of a uint8 export that passed."""
    result = export_model(model, tflite_uint8(destination, **params))
    metadata = json.loads((Path(result.output_dir) / "tflite_metadata.json").read_text())
    return result.report["checks"]["verification"], metadata["quantization"]


def assert_within_budget(check: dict, quantization: dict) -> None:
    assert check["passed"]
    assert check["artifact_accuracy"] >= check["source_accuracy"] - ACCURACY_POINTS, check
    kept = [entry for entry in quantization["tries"] if entry["kept"]]
    assert len(kept) == 1 and kept[0]["passed"]
    assert kept[0]["flips"] == check["decided"] - check["agreeing"]  # the published model is the kept try


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(zoo.seeded_name(base, seed), id=f"{base}-seed{seed}")
        for base in SUITE_FAMILIES
        for seed in zoo.SEEDS
    ],
)
def test_every_seeded_instance_meets_the_uint8_budget(zoo_model, tmp_path, name):
    check, quantization = exported_uint8(zoo_model(name), tmp_path)
    assert_within_budget(check, quantization)


def test_each_family_is_trained_under_three_seeds():
    for base in (*SUITE_FAMILIES, FULL_SIZE):
        entries = [zoo.zoo_entry(zoo.seeded_name(base, seed)) for seed in zoo.SEEDS]
        assert sorted(entry.seed for entry in entries) == sorted(zoo.SEEDS) and len(set(zoo.SEEDS)) >= 3
        assert len({(entry.network, entry.size, entry.epochs, entry.input_range) for entry in entries}) == 1


@pytest.mark.slow
@pytest.mark.zoo
@pytest.mark.parametrize("seed", zoo.SEEDS)
@pytest.mark.parametrize("remedies", ["all", "integer"])
def test_full_size_efficientnet_b0_instances(zoo_model, tmp_path, seed, remedies):
    """The issue's instances: EfficientNetB0, 96x96, four epochs, three seeds. ``all`` must meet the
    budget; ``integer`` (ranges chosen per tensor, no float layer: what edgetpu_tflite allows) is
    recorded in docs/quantization.md, passing or by how much it misses."""
    model = zoo_model(zoo.seeded_name(FULL_SIZE, seed))
    if remedies == "all":
        check, quantization = exported_uint8(model, tmp_path)
        assert_within_budget(check, quantization)
        return
    try:
        check, quantization = exported_uint8(model, tmp_path, quantization_remedies="integer")
    except ExportFailed as failed:
        check = failed.report["failedCheck"]
        flips = check["decided"] - check["agreeing"]
        assert flips <= 2 * check["allowed_disagreements"], check  # misses, but by no more than the budget again
        assert all(not entry["float_layers"] for entry in check["remedies"])
        return
    assert_within_budget(check, quantization)
    assert all(not entry["float_layers"] for entry in quantization["tries"])
