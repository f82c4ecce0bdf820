"""The store decides who runs an operation: fencing tokens, the publish transaction, hand-backs,
holder liveness, unique create times per destination and limits in one transaction, on real SQLite
and PostgreSQL databases (PostgreSQL at 127.0.0.1:5432, trust auth: these tests fail without it)."""

from __future__ import annotations

import multiprocessing
import time
import traceback
import uuid

import psycopg
import pytest

from exporter.core.clock import export_folder_name
from exporter.core.errors import Code, ExportError
from exporter.service.jobs import job_error
from exporter.service.store import Limits, State, Store

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PARENT = "projects/p/locations/l"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    name = f"exporter_fleet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    store.migrate()
    yield store
    store.engine.dispose()


def test_each_claim_grows_the_fence_and_a_stale_claim_writes_nothing(store):
    op = store.create_operation(PARENT, "m", {})
    first = store.claim("worker-a", lease_seconds=60)
    assert (first.id, first.fence, first.attempts) == (op.id, 1, 1)
    assert store.release_lost("worker-a", max_attempts=3, reason="gone") == 1  # its worker died
    second = store.claim("worker-b", lease_seconds=60, op_id=op.id)
    assert (second.fence, second.attempts) == (2, 2)

    assert not store.renew(op.id, first.fence, 60)  # the stale holder learns it lost the claim
    store.progress(op.id, first.fence, 85)
    assert not store.finish(op.id, first.fence, State.SUCCEEDED, output_dir="/stale")  # dropped
    with pytest.raises(ExportError) as refused, store.publishing(op.id, first.fence):
        pass
    assert refused.value.code is Code.ABORTED and "nothing was published" in refused.value.message

    held = store.publishing(op.id, second.fence)
    with held:
        pass
    assert held.finish(State.SUCCEEDED, output_dir="/current", progress_percent=100)
    row = store.get_operation(op.name)
    assert (row.state, row.output_dir, row.progress_percent) == ("succeeded", "/current", 100)


def test_a_second_delivery_of_a_job_is_a_refused_claim(store):
    op = store.create_operation(PARENT, "m", {})
    assert store.claim("worker-a", 60, op_id=op.id).fence == 1
    assert store.claim("worker-b", 60, op_id=op.id) is None  # running elsewhere
    assert store.claim("worker-b", 60, op_id="no-such-operation") is None


def test_the_publish_transaction_makes_a_requeue_wait(database_url, store):
    """While one attempt publishes, a requeue of its operation waits, then finds it done."""
    op = store.create_operation(PARENT, "m", {})
    row = store.claim("worker-a", 60)
    held = store.publishing(op.id, row.fence)
    held.__enter__()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    other = context.Process(target=_hand_back_in_process, args=(database_url, op.id, row.fence, results))
    other.start()
    time.sleep(1.5)  # the other process is now waiting for the row
    assert other.is_alive()
    assert held.finish(State.SUCCEEDED, output_dir="/published")
    assert results.get(timeout=60) == "False"  # by then the operation had ended: nothing to hand back
    other.join(timeout=30)
    assert store.get_operation(op.name).state == "succeeded"


def _hand_back_in_process(url: str, op_id: str, fence: int, results) -> None:
    try:
        store = Store(url)
        results.put(str(store.hand_back(op_id, fence)))
        store.engine.dispose()
    except BaseException:  # noqa: BLE001  (reported to the test, which fails on it)
        results.put(traceback.format_exc())


def test_a_hand_back_is_not_an_attempt_and_a_crash_is(store):
    op = store.create_operation(PARENT, "m", {})
    row = store.claim("worker-a", 60)
    assert store.hand_back(op.id, row.fence)
    back = store.get_operation(op.name)
    assert (back.state, back.attempts, back.lease_owner, back.dispatched_at) == ("queued", 0, None, None)
    row = store.claim("worker-b", 60)
    assert store.release_lost("worker-b", max_attempts=1, reason="worker process 7 exited with status -9") == 1
    failed = store.get_operation(op.name)
    assert failed.state == "failed" and failed.error["code"] == Code.ABORTED
    assert "exited with status -9; gave up after 1 attempts" in failed.error["message"]


def test_a_silent_holder_is_requeued_within_its_liveness_not_its_lease(store):
    op = store.create_operation(PARENT, "m", {})
    row = store.claim("worker-a", lease_seconds=300)
    assert store.release_lost(None, 3, "silent", liveness_seconds=2) == 0  # it beat just now
    time.sleep(2.5)
    assert store.release_lost(None, 3, "silent", liveness_seconds=60) == 0  # within a long liveness
    assert store.release_lost(None, 3, "silent", liveness_seconds=2) == 1
    again = store.get_operation(op.name)
    assert again.state == "queued" and again.attempts == 1
    assert not store.renew(op.id, row.fence, 300)


def test_create_times_are_unique_per_destination_to_the_millisecond(store):
    made = [store.create_operation(PARENT, "m", {}, destination="/exports/a") for _ in range(40)]
    made += [store.create_operation(PARENT, "m", {}, destination="/exports/b") for _ in range(5)]
    names = [export_folder_name("flowers", row.create_time) for row in made[:40]]
    assert len(set(names)) == 40  # 40 folders, where several shared a millisecond before
    stored = [store.get_operation(row.name).create_time for row in made]
    assert stored == [row.create_time for row in made]  # the stored time is the folder's time
    assert all(t.microsecond % 1000 == 0 for t in stored)


def _create_in_process(url: str, who: str, barrier, results) -> None:
    try:
        store = Store(url)
        barrier.wait(timeout=60)
        try:
            store.create_operation(PARENT, "m", {}, who, destination="/d", limits=Limits(per_principal=8, queue=100))
            results.put("created")
        except ExportError as error:
            results.put(f"{error.code.name}: {error.message}")
        store.engine.dispose()
    except BaseException:  # noqa: BLE001  (reported to the test, which fails on it)
        results.put(traceback.format_exc())


def test_limits_hold_exactly_when_requests_arrive_at_once(database_url, store):
    """20 processes ask at the same moment for one principal limited to 8: exactly 8 get in."""
    context = multiprocessing.get_context("spawn")
    count = 20
    barrier, results = context.Barrier(count), context.Queue()
    processes = [
        context.Process(target=_create_in_process, args=(database_url, "alice", barrier, results)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes.count("created") == 8, outcomes
    refused = [o for o in outcomes if o != "created"]
    assert refused == ["RESOURCE_EXHAUSTED: alice already has 8 exports queued or running; wait for one to finish"] * 12
    assert store.count_unfinished("alice") == 8


def test_the_queue_limit_counts_everyone(store):
    limits = Limits(per_principal=5, queue=3)
    for who in ("a", "b", "c"):
        store.create_operation(PARENT, "m", {}, who, limits=limits)
    with pytest.raises(ExportError, match=r"the export queue is full \(3 queued\)"):
        store.create_operation(PARENT, "m", {}, "d", limits=limits)


def test_to_dispatch_sends_each_queued_operation_once_until_it_may_be_lost(store):
    first = store.create_operation(PARENT, "m", {})
    assert [row.id for row in store.to_dispatch(older_than_seconds=60)] == [first.id]
    assert store.to_dispatch(older_than_seconds=60) == []  # sent, not lost yet
    time.sleep(1.1)
    assert [row.id for row in store.to_dispatch(older_than_seconds=1)] == [first.id]  # sent again
    store.claim("w", 60)
    time.sleep(1.1)
    assert store.to_dispatch(older_than_seconds=1) == []  # running: nothing to send


def test_a_missing_credential_is_named_not_a_crash():
    from google.auth.exceptions import DefaultCredentialsError, RefreshError

    try:
        try:
            raise DefaultCredentialsError("Your default credentials were not found.")
        except DefaultCredentialsError as cause:
            raise ExportError(Code.INTERNAL, "load of tflite failed: DefaultCredentialsError") from cause
    except ExportError as wrapped:
        error = job_error(wrapped)
    assert error.code is Code.FAILED_PRECONDITION
    assert "GOOGLE_APPLICATION_CREDENTIALS" in error.message and "default credentials were not found" in error.message
    assert job_error(RefreshError("invalid_grant")).code is Code.UNAUTHENTICATED
    other = job_error(ZeroDivisionError("division by zero"))
    assert (other.code, other.message) == (Code.INTERNAL, "the export failed: ZeroDivisionError: division by zero")
