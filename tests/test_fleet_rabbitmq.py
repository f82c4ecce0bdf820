"""The Celery fleet on RabbitMQ (AMQP) instead of Redis: `exporter serve` (EXPORTER_RUNNER=celery)
and two `exporter worker` processes on a virtual host of the test's own on the machine's RabbitMQ,
a real PostgreSQL store. Each export ends with one result and one folder.

What differs from Redis, and is checked here: a killed worker's unacknowledged message goes back to
the queue at once (AMQP's late acknowledgement, no visibility timeout) and reaches the other worker;
the workers negotiate no AMQP heartbeat (the solo pool cannot answer one during a job); a job that
outlives RabbitMQ's consumer_timeout has its channel closed by the broker, and its worker reconnects
instead of exiting (on a RabbitMQ node of the test's own, whose consumer_timeout is one second).

The exports run without the sandbox (EXPORTER_SANDBOX=off), as in test_fleet_celery.py: a
conversion in the worker process dies with it on kill -9.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from fleet_harness import (
    CeleryFleet,
    CeleryWorker,
    RabbitNode,
    RabbitVhost,
    exports_and_staging,
    rabbitmqctl,
    wait_for,
)

pytestmark = pytest.mark.slow

# Longer than any reconnect on a loaded machine: only a worker that hangs reaches it.
RECONNECT_HANG = 300


@pytest.fixture(scope="module")
def vhost():
    vhost = RabbitVhost().create()
    yield vhost
    vhost.delete()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, canary_model, vhost):
    fleet = CeleryFleet(tmp_path_factory.mktemp("rabbitmq-fleet"), canary_model, vhost.url)
    yield fleet
    fleet.close()


@pytest.fixture
def live_fleet(fleet):
    """A worker that a test killed is started again for the next test."""
    for name, worker in list(fleet.workers.items()):
        if worker.process.poll() is not None:
            fleet.workers[name] = CeleryWorker(name, fleet.env, fleet.folder).start()
    return fleet


def received(worker: CeleryWorker) -> list[str]:
    """The ids of the job messages a worker received, in order (Celery logs each)."""
    return re.findall(r"Task exporter\.export\[([0-9a-f-]+)\] received", worker.log_path.read_text())


def queues_drained(vhost: RabbitVhost) -> bool:
    """Every message in the virtual host's export queues acknowledged: none left, none held."""
    return all(counts == (0, 0) for name, counts in vhost.queues().items() if name.startswith("exports"))


def test_an_export_through_two_workers_on_rabbitmq_ends_with_one_folder(live_fleet, vhost):
    fleet = live_fleet
    name = fleet.export("plain")
    done = fleet.server.wait(name)
    assert "response" in done, done
    row = fleet.store.get_operation(name)
    assert (row.state, row.attempts, row.fence) == ("succeeded", 1, 1)
    folders, staging = exports_and_staging(fleet.outputs / "plain")
    assert len(folders) == 1 and staging == []
    assert any(received(worker) for worker in fleet.workers.values())
    wait_for(lambda: queues_drained(vhost), 30, "the job message to be acknowledged")
    # No AMQP heartbeat on any of the fleet's connections (the API's and the workers').
    connections = [line.split("\t") for line in rabbitmqctl("list_connections", "-q", "vhost", "timeout").splitlines()]
    timeouts = [timeout for host, timeout in connections if host == vhost.name]
    assert len(timeouts) >= 2 and set(timeouts) == {"0"}, connections


def test_kill_9_of_the_holder_the_other_worker_finishes_it(live_fleet, vhost):
    fleet = live_fleet
    name = fleet.export("killed")
    holder = fleet.holder(name)
    other = next(worker for worker in fleet.workers.values() if worker is not holder)
    message = received(holder)[-1]  # the message of the job it is running, not yet acknowledged
    holder.signal(signal.SIGKILL)
    done = fleet.server.wait(name)
    assert "response" in done, done
    row = fleet.store.get_operation(name)
    assert (row.attempts, row.fence) == (2, 2)  # the killed attempt counted, then the other's
    folders, staging = exports_and_staging(fleet.outputs / "killed")
    assert len(folders) == 1 and staging == []
    # Late acknowledgement on AMQP: the dead worker's message went back to the queue and on to the
    # other worker (a refused claim while the dead holder's heartbeat was still fresh, or the run).
    assert message in received(other)
    wait_for(lambda: queues_drained(vhost), 30, "every job message to be acknowledged")


@pytest.fixture
def impatient_fleet(tmp_path, canary_model):
    """A fleet on a RabbitMQ node whose consumer_timeout is 1 s, checked every 200 ms."""
    node = RabbitNode(
        tmp_path, {"consumer_timeout": "1000", "loopback_users": "none"}, {"channel_tick_interval": "200"}
    ).start()
    try:
        fleet = CeleryFleet(tmp_path / "fleet", canary_model, node.url)
    except BaseException:
        node.stop()
        raise
    yield fleet, node
    fleet.close()
    node.stop()


def test_a_job_longer_than_the_consumer_timeout_ends_once_and_its_worker_goes_on(impatient_fleet, digits_model):
    fleet, node = impatient_fleet
    # The digits model's uint8 export: seconds of calibration and conversion, well past the 1 s
    # timeout (the canary's could end before RabbitMQ's check came round).
    fleet.server.import_model(digits_model, "digits")
    name = fleet.export("slow", "tflite", "digits", quantization="uint8")
    holder = fleet.holder(name)
    other = next(worker for worker in fleet.workers.values() if worker is not holder)
    message = received(holder)[-1]
    done = fleet.server.wait(name)
    assert "response" in done, done
    assert "timed out waiting for delivery acknowledgement" in node.log_path.read_text()
    # RabbitMQ put the message back and gave it to the other worker: a refused claim, a no-op.
    assert message in received(other)
    row = fleet.store.get_operation(name)
    assert (row.state, row.attempts, row.fence) == ("succeeded", 1, 1)
    folders, staging = exports_and_staging(fleet.outputs / "slow")
    assert len(folders) == 1 and staging == []

    # The closed channel is a reconnect, not "Unrecoverable error": the worker stays and serves.
    # How soon the reconnect comes depends on how busy the machine is, so the wait ends on what the
    # worker does (reconnects, exits or gives up), with a bound only against a hang.
    def settled() -> bool:
        log = holder.log_path.read_text()
        return (
            log.count("Connected to amqp://") >= 2 or "Unrecoverable error" in log or holder.process.poll() is not None
        )

    wait_for(settled, RECONNECT_HANG, "the worker to reconnect, exit or give up")
    assert "Unrecoverable error" not in holder.log_path.read_text()
    assert holder.process.poll() is None
    assert holder.log_path.read_text().count("Connected to amqp://") >= 2
    again = fleet.export("after")
    assert "response" in fleet.server.wait(again)
    assert len(exports_and_staging(fleet.outputs / "after")[0]) == 1
    assert all(worker.process.poll() is None for worker in fleet.workers.values())


def test_a_channel_closed_once_per_tick_during_a_long_job_reopens_once(tmp_path):
    """RabbitMQ sends one channel.close per tick until a busy client answers: the worker's
    channel answers the first, drops the stale ones, and reopens once on the same connection
    (py-amqp alone answered each and lost the connection, or overflowed the stack)."""
    import amqp
    from kombu import Connection

    from exporter.service.amqp_channel import StaleCloseTolerantChannel, use_stale_close_tolerant_channels

    use_stale_close_tolerant_channels()
    node = RabbitNode(
        tmp_path, {"consumer_timeout": "1000", "loopback_users": "none"}, {"channel_tick_interval": "200"}
    ).start()
    try:
        with Connection(node.url, heartbeat=0) as connection:
            connection.connect()
            raw = connection.connection
            channel = raw.channel()
            assert isinstance(channel, StaleCloseTolerantChannel)
            channel.queue_declare("jobs", auto_delete=False)
            channel.basic_publish(amqp.Message("job"), routing_key="jobs")
            channel.basic_qos(0, 1, False)
            received = []
            channel.basic_consume("jobs", callback=received.append)
            raw.drain_events(timeout=10)
            assert len(received) == 1
            time.sleep(10)  # a job blocking the loop: about 45 ticks past the 1 s timeout
            errors = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    raw.drain_events(timeout=1)
                except TimeoutError:
                    break
                except amqp.exceptions.AMQPError as error:
                    errors.append(error)
            assert [type(error) for error in errors] == [amqp.exceptions.PreconditionFailed], errors
            assert raw.connected and channel.is_open
            # The timed-out job went back to the queue, and the reopened channel receives it.
            channel.basic_consume("jobs", callback=received.append)
            raw.drain_events(timeout=10)
            assert len(received) == 2
        assert "timed out waiting for delivery acknowledgement" in node.log_path.read_text()
        assert "COMMAND_INVALID" not in node.log_path.read_text().upper()
    finally:
        node.stop()
