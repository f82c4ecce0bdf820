"""A job that runs its worker out of memory every time, on a Celery fleet: the worker runs in a
memory cgroup of the test's own (1 GiB, enforced by the kernel), and a supervisor starts it again
each time it dies, as a service manager would. The export is of a model that needs about 2 GiB to
convert (the canary plus a 384 MiB variable): the kernel's OOM killer ends the worker in each
attempt, the store counts the attempts, and after EXPORTER_MAX_ATTEMPTS the operation fails saying
its worker was lost each time; nothing is published and no staging folder is left. The same
worker, restarted, then exports the canary (a job that fits its memory).

On both brokers: Redis sets no "redelivered" flag, RabbitMQ redelivers without limit; either way
the store's attempt count is what ends the operation. Sandbox off (as in the other fleet tests):
the conversion runs, and dies, in the worker process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import CACHE
from exporter.core.errors import Code
from fleet_harness import (
    CeleryFleet,
    CeleryWorker,
    MemoryCgroup,
    RabbitVhost,
    RedisServer,
    Supervisor,
    exports_and_staging,
    wait_for,
)
from service_harness import PARENT

pytestmark = pytest.mark.slow

WORKER_MEMORY = 1 << 30
BALLAST_MIB = 384

# The canary's signature, wrapped with a variable that loading the model fills: conversion holds
# several copies of it. Measured in an unlimited cgroup: a worker peaked at 2.0 GiB exporting this
# model to tflite, at under 0.6 GiB exporting the canary.
BALLASTED = """
import shutil, sys
from pathlib import Path
import tensorflow as tf

canary, out, mib = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
shutil.copytree(canary, out, ignore=shutil.ignore_patterns("saved_model"))


class Ballasted(tf.Module):
    def __init__(self):
        self.canary = tf.saved_model.load(str(canary / "saved_model"))
        self.ballast = tf.Variable(tf.zeros([mib << 18]))  # float32: 4 bytes each

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
    def serve(self, image):
        probabilities = self.canary.signatures["serving_default"](image=image)["probabilities"]
        return {"probabilities": probabilities + 0.0 * self.ballast[0]}


model = Ballasted()
tf.saved_model.save(model, str(out / "saved_model"), signatures={"serving_default": model.serve})
"""


@pytest.fixture(scope="module")
def ballasted_model(tmp_path_factory, canary_model):
    folder = tmp_path_factory.mktemp("ballasted") / "model"
    subprocess.run(
        [sys.executable, "-c", BALLASTED, str(canary_model), str(folder), str(BALLAST_MIB)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return folder


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request, tmp_path):
    if request.param == "redis":
        server = RedisServer(tmp_path).start()
        yield server.url
        server.stop()
    else:
        vhost = RabbitVhost().create()
        yield vhost.url
        vhost.delete()


def test_a_job_that_runs_its_worker_out_of_memory_fails_after_its_attempts(
    tmp_path, canary_model, ballasted_model, broker
):
    roots = json.dumps([str(CACHE), str(ballasted_model.parent)])
    fleet = CeleryFleet(tmp_path / "fleet", canary_model, broker, workers=(), EXPORTER_IMPORT_ROOTS=roots)
    cgroup = MemoryCgroup(WORKER_MEMORY)
    supervisor = None
    try:
        supervisor = Supervisor(CeleryWorker("capped", fleet.env, fleet.folder, cgroup=cgroup)).start()
        imported = fleet.server.call(
            "POST", f"{PARENT}/models:import", json={"sourceUri": str(ballasted_model), "modelId": "ballasted"}
        )
        assert imported.status_code == 200, imported.text
        config = {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(fleet.outputs / "too-big")}}
        response = fleet.server.call("POST", f"{PARENT}/models/ballasted:export", json={"outputConfig": config})
        assert response.status_code == 200, response.text
        name = response.json()["name"]

        done = fleet.server.wait(name, timeout=600)
        error = done.get("error", {})
        assert error.get("code") == Code.ABORTED.value, done
        assert "worker stopped answering in each attempt" in error["message"], error
        assert "out of memory" in error["message"] and "gave up after 2 attempts" in error["message"], error
        row = fleet.store.get_operation(name)
        assert (row.state, row.attempts, row.fence) == ("failed", 2, 2)
        # Killed by the kernel for memory in each attempt, and by nothing else.
        wait_for(lambda: len(supervisor.exits) >= 2, 60, "the supervisor to see the second death")
        assert supervisor.exits == [-9, -9]
        assert cgroup.oom_kills() == 2
        assert exports_and_staging(fleet.outputs / "too-big") == ([], [])

        # The worker, started again, serves a job that fits its memory.
        fits = fleet.export("fits")
        assert "response" in fleet.server.wait(fits, timeout=300)
        assert len(exports_and_staging(fleet.outputs / "fits")[0]) == 1
        assert cgroup.oom_kills() == 2 and supervisor.exits == [-9, -9]
    finally:
        if supervisor is not None:
            supervisor.stop()
        fleet.close()
        cgroup.remove()
