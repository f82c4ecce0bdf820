"""Faults against a Celery fleet: a real Redis broker of the test's own, a real PostgreSQL store,
`exporter serve` with EXPORTER_RUNNER=celery and two `exporter worker` processes. Each ends with
exactly one result per operation and one folder per export.

The exports run without the sandbox (EXPORTER_SANDBOX=off), as in test_fleet_embedded.py: a
conversion in the worker process dies with it on kill -9.
"""

from __future__ import annotations

import signal
import time

import pytest

from conftest import CACHE
from exporter.service.celery_runner import TASK, make_celery
from exporter.service.settings import ServiceSettings
from fleet_harness import (
    CeleryFleet,
    CeleryWorker,
    RedisServer,
    exports_and_staging,
)
from service_harness import PARENT, Server, export_burst

pytestmark = pytest.mark.slow


class Fleet(CeleryFleet):
    """The harness's Celery fleet on a Redis of the test's own, whose API and workers the tests
    stop and start again."""

    def __init__(self, folder, canary_model):
        self.redis = RedisServer(folder).start()
        try:
            super().__init__(folder, canary_model, self.redis.url)
        except BaseException:
            self.redis.stop()
            raise

    def start_server(self) -> Server:
        """The API again, on the same port."""
        server = Server(self.folder, [CACHE], [self.outputs], **{**self.env, "EXPORTER_WORKERS": "0"})
        server.port = self.server.port
        return server.start()

    def revive(self) -> None:
        """A worker that a test killed is started again for the next test."""
        for name, worker in list(self.workers.items()):
            if worker.process.poll() is not None:
                self.workers[name] = CeleryWorker(name, self.env, self.folder).start()

    def close(self) -> None:
        super().close()
        self.redis.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, canary_model):
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), canary_model)
    yield fleet
    fleet.close()


@pytest.fixture
def live_fleet(fleet):
    fleet.revive()
    return fleet


def test_kill_9_of_a_worker_mid_export_the_other_finishes_it(live_fleet):
    fleet = live_fleet
    name = fleet.export("killed")
    fleet.holder(name).signal(signal.SIGKILL)
    done = fleet.server.wait(name)
    assert "response" in done, done
    row = fleet.store.get_operation(name)
    assert (row.attempts, row.fence) == (2, 2)
    folders, staging = exports_and_staging(fleet.outputs / "killed")
    assert len(folders) == 1 and staging == []


def test_a_worker_stopped_past_its_liveness_publishes_nothing_when_it_resumes(live_fleet):
    fleet = live_fleet
    name = fleet.export("stalled")
    stalled = fleet.holder(name)
    stalled.signal(signal.SIGSTOP)
    try:
        done = fleet.server.wait(name)  # requeued within seconds, run by the other worker
    finally:
        stalled.signal(signal.SIGCONT)
    assert "response" in done, done
    time.sleep(8)  # the stale worker runs on: refused at its next heartbeat, it publishes nothing
    row = fleet.store.get_operation(name)
    assert (row.state, row.fence, row.attempts) == ("succeeded", 2, 2)
    folders, staging = exports_and_staging(fleet.outputs / "stalled")
    assert len(folders) == 1 and staging == []
    assert stalled.process.poll() is None  # the stale worker is alive and serving, not crashed


def test_a_job_delivered_again_is_a_no_op(live_fleet):
    fleet = live_fleet
    name = fleet.export("twice")
    done = fleet.server.wait(name)
    assert "response" in done, done
    before = fleet.store.get_operation(name)
    app = make_celery(ServiceSettings(runner="celery", broker_url=fleet.redis.url, database_url=fleet.url))
    for _ in range(3):  # what Redis does after a visibility timeout: the same job again
        app.send_task(TASK, args=[before.id], queue="exports")
    time.sleep(5)
    after = fleet.store.get_operation(name)
    assert (after.fence, after.attempts, after.state, after.update_time) == (
        before.fence,
        before.attempts,
        "succeeded",
        before.update_time,
    )
    folders, _ = exports_and_staging(fleet.outputs / "twice")
    assert len(folders) == 1


def test_sigterm_of_a_worker_hands_its_job_back_uncounted(live_fleet):
    fleet = live_fleet
    # tf_js: a conversion and a Node.js check, seconds longer than the 1 s drain even on a quiet machine.
    name = fleet.export("handed-back", "tf_js")
    leaving = fleet.holder(name)
    leaving.signal(signal.SIGTERM)  # warm shutdown: 1 s of drain, then the job goes back
    assert leaving.process.wait(timeout=60) == 0
    done = fleet.server.wait(name)  # sent again, run by the other worker
    assert "response" in done, done
    row = fleet.store.get_operation(name)
    assert (row.fence, row.attempts) == (2, 1), "handed back: a second claim, the first not counted"
    staying = next(worker for worker in fleet.workers.values() if worker is not leaving)
    assert "exporter.export[" in staying.log_path.read_text()  # the second claim was the other worker's
    assert "handed back after 1s of drain" in leaving.log_path.read_text()
    folders, staging = exports_and_staging(fleet.outputs / "handed-back")
    assert len(folders) == 1 and staging == []


def test_restart_of_the_api_during_a_run_loses_nothing(live_fleet):
    fleet = live_fleet
    name = fleet.export("api-restart")
    fleet.holder(name)
    fleet.server.stop()  # the job runs on in its worker meanwhile
    fleet.server = fleet.start_server()
    done = fleet.server.wait(name)
    assert "response" in done, done
    assert fleet.store.get_operation(name).attempts == 1
    folders, staging = exports_and_staging(fleet.outputs / "api-restart")
    assert len(folders) == 1 and staging == []


def test_cancel_reaches_a_job_running_in_a_worker(live_fleet):
    fleet = live_fleet
    name = fleet.export("cancelled")
    fleet.holder(name)
    assert fleet.server.call("POST", f"{name}:cancel", json={}).status_code == 200
    done = fleet.server.wait(name)
    assert done["error"]["code"] == 1, done  # CANCELLED, at the worker's next stage
    assert exports_and_staging(fleet.outputs / "cancelled") == ([], [])


def test_a_docker_job_goes_only_to_a_worker_of_its_queue(live_fleet):
    """The test workers listen on "exports" only: a docker export waits in exports.docker."""
    fleet = live_fleet
    body = {"outputConfig": {"modelFormat": "docker", "gcrDestination": {"outputUri": "registry:5000/p/m:1"}}}
    response = fleet.server.call("POST", f"{PARENT}/models/canary:export", json=body)
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    time.sleep(5)
    row = fleet.store.get_operation(name)
    assert (row.state, row.attempts) == ("queued", 0) and row.dispatched_at is not None  # sent, not taken
    assert fleet.server.call("POST", f"{name}:cancel", json={}).status_code == 200


def test_restart_of_redis_during_a_run_loses_nothing(live_fleet):
    """Redis restarts empty (no persistence): every message in it is gone. The running job
    finishes in its worker; one queued while Redis was down is sent once it is back."""
    fleet = live_fleet
    running = fleet.export("redis-running")
    fleet.holder(running)
    fleet.redis.stop()
    queued = fleet.export("redis-down")  # accepted: the store queues it; the dispatcher cannot send yet
    time.sleep(3)
    fleet.redis.start()  # the same port, empty
    for name, folder in ((running, "redis-running"), (queued, "redis-down")):
        done = fleet.server.wait(name, timeout=240)
        assert "response" in done, done
        folders, staging = exports_and_staging(fleet.outputs / folder)
        assert len(folders) == 1 and staging == []


def test_20_clients_at_once_limits_exact_folders_unique(live_fleet):
    fleet = live_fleet
    # The limit is on exports active at once: one that ended during the burst would free a slot
    # for a 9th, so the workers are stopped until every post is answered.
    for worker in fleet.workers.values():
        worker.signal(signal.SIGSTOP)
    try:
        accepted, refused = export_burst(fleet.server, fleet.outputs / "burst")
    finally:
        for worker in fleet.workers.values():
            worker.signal(signal.SIGCONT)
    assert len(accepted) == 8 and refused == ["RESOURCE_EXHAUSTED"] * 12  # the default limit, 8
    for name in accepted:
        assert "response" in fleet.server.wait(name, timeout=300)
    folders, staging = exports_and_staging(fleet.outputs / "burst")
    assert len(folders) == 8 and staging == []
    assert {fleet.store.get_operation(n).attempts for n in accepted} == {1}
