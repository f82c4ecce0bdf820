"""Publish is idempotent per operation: when an attempt published its export and the store went
away before its result was recorded, the next attempt records that export instead of failing
ALREADY_EXISTS on its own folder. A folder of the same name from any other request is never taken.

The state after that fault is made for real: the first attempt's claim, the export it publishes
(export_model with the operation's create time, as the job runs it), then its holder lost."""

from __future__ import annotations

import json

import pytest

from exporter.core.clock import utc_now
from exporter.core.report import REPORT_FILE
from exporter.run import export_model
from exporter.service.jobs import run_operation
from exporter.service.settings import ServiceSettings
from exporter.service.store import Store
from exporter.service.tables import ModelRow

PARENT = "projects/p/locations/l"
MODEL = f"{PARENT}/models/canary"


@pytest.fixture
def service(tmp_path, canary_model):
    outputs = tmp_path / "exports"
    settings = ServiceSettings(
        data_dir=tmp_path / "data", output_roots=[outputs], sandbox="off", lease_seconds=60, max_attempts=3
    )
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    now = utc_now()
    store.add_model(
        ModelRow(
            name=MODEL,
            parent=PARENT,
            display_name="colour_canary",
            model_type="mobile-low-latency-1",
            path=str(canary_model),
            create_time=now,
            update_time=now,
        )
    )
    yield settings, store, outputs
    store.engine.dispose()


def published_then_lost(store: Store, output_config: dict, published_config: dict) -> str:
    """An operation whose first attempt published `published_config`'s export under the
    operation's folder name, then lost its worker before recording anything."""
    op = store.create_operation(PARENT, MODEL, output_config, destination="exports")
    first = store.claim("worker-a", 60, op_id=op.id)
    export_model(first_model_path(store), published_config, started=first.create_time)
    assert store.release_lost("worker-a", max_attempts=3, reason="its worker stopped answering") == 1
    return op.name


def first_model_path(store: Store) -> str:
    return store.get_model(MODEL).path


def test_the_next_attempt_records_what_the_last_one_published(service):
    settings, store, outputs = service
    config = {"gcsDestination": {"outputUriPrefix": str(outputs)}}
    name = published_then_lost(store, config, config)
    (published,) = list(outputs.iterdir())

    assert run_operation(store, settings, "worker-b", name.rsplit("/", 1)[1])
    row = store.get_operation(name)
    assert (row.state, row.fence, row.output_dir) == ("succeeded", 2, str(published)), row.error
    assert row.report == json.loads((published / REPORT_FILE).read_text())
    assert [p.name for p in outputs.iterdir()] == [published.name]  # nothing converted or staged again


def test_a_folder_of_the_same_name_from_another_request_is_not_taken(service):
    settings, store, outputs = service
    config = {"gcsDestination": {"outputUriPrefix": str(outputs)}}
    other = {**config, "params": {"quantization": "float16"}}  # same folder name, another export
    name = published_then_lost(store, config, other)

    assert run_operation(store, settings, "worker-b", name.rsplit("/", 1)[1])
    row = store.get_operation(name)
    assert row.state == "failed" and row.error["code"] == 6, row.error  # ALREADY_EXISTS
    assert "already exists" in row.error["message"]
