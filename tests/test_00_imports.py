"""First: the heavy libraries of the stack import, at the pinned versions."""

import importlib
from importlib import metadata

import pytest

PINNED = {
    "tensorflow": "2.19.0",
    "tensorflowjs": "4.22.0",
    "coremltools": "9.0",
    "ai-edge-litert": "2.3.0",
}


@pytest.mark.parametrize(
    "module",
    [
        "tensorflow",
        "tensorflowjs",
        "coremltools",
        "ai_edge_litert.interpreter",
        "mediapipe.tasks.metadata.metadata_schema_py_generated",
        "mediapipe.tasks.python.vision",
        "fastapi",
        "sqlalchemy",
        "celery",
        "google.cloud.storage",
        "google.cloud.automl_v1beta1",
        "docker",
    ],
)
def test_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("distribution,version", sorted(PINNED.items()))
def test_pinned_versions(distribution, version):
    assert metadata.version(distribution) == version
