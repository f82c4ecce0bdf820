"""Celery as the fleet's job runner, the server's side: the Celery app's settings, the queue of
each format, and the dispatcher that sends queued operations to the workers.

What Celery guarantees here (Redis broker): a job message is acknowledged only after its job
returned (``acks_late``), each worker takes one message at a time (prefetch 1), and a message not
acknowledged within the visibility timeout is delivered again. What the store adds, for Redis'
known gaps: a delivery is only a hint, and the claim decides (a second delivery is a refused claim,
a no-op); the store counts attempts (Redis sets no "redelivered" flag, so a job that kills its
worker would come back for ever); and the dispatcher here sends again what no live worker holds:
an operation whose holder stopped beating is queued again within ``liveness_seconds``, and a queued
operation whose message may have been lost (a warm shutdown can drop one) is sent again after
``redispatch_seconds``.

On RabbitMQ (``amqp://``) two of the broker's own timers would cut a long job short, so the app is
set up differently there (``make_celery``): the solo pool cannot answer AMQP heartbeats while a
job runs, and RabbitMQ closes the channel of a delivery not acknowledged within its
``consumer_timeout`` (30 min by default, a setting of the broker, not of the client).
"""

from __future__ import annotations

import logging
import threading
from functools import partial

from exporter.service.jobs import LOST_WORKER, clean_up_ended
from exporter.service.settings import ServiceSettings
from exporter.service.store import OperationRow, Store

log = logging.getLogger("exporter.celery")

TASK = "exporter.export"
DEFAULT_QUEUE = "exports"
# Formats that need a tool only some machines have go to their own queue; `exporter worker`
# listens on it only where the tool is there.
FORMAT_QUEUES = {"docker": "exports.docker", "edgetpu_tflite": "exports.edgetpu"}


def queue_for(model_format: str | None) -> str:
    return FORMAT_QUEUES.get(model_format or "", DEFAULT_QUEUE)


def make_celery(settings: ServiceSettings):
    """The Celery app that both the server (to send) and `exporter worker` (to run) use."""
    from celery import Celery

    app = Celery("exporter", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged after the job: a lost worker's job is delivered again
        worker_prefetch_multiplier=1,  # one message at a time per worker: no job waits behind another
        task_ignore_result=True,  # the result is the operation in the store, not a Celery result
        task_default_queue=DEFAULT_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if is_amqp(settings.broker_url):
        # A job past consumer_timeout leaves one channel.close per broker tick waiting for the
        # worker: reopened once, not once per Close (exporter.service.amqp_channel).
        from exporter.service.amqp_channel import use_stale_close_tolerant_channels

        use_stale_close_tolerant_channels()
        app.conf.update(
            # The solo pool runs a job in the loop that would answer heartbeats: RabbitMQ dropped
            # the connection of every job longer than the heartbeat timeout and delivered it again.
            # Without heartbeats a killed worker is still seen at once (its socket closes); a lost
            # machine's job is requeued by the store's liveness check.
            broker_heartbeat=0,
            # A job past RabbitMQ's consumer_timeout has its channel closed (the message goes back
            # to the queue; its delivery to another worker is a refused claim): reconnect and go
            # on serving instead of exiting with "Unrecoverable error: PreconditionFailed".
            broker_channel_error_retry=True,
        )
    else:
        # Redis (and SQS) deliver again a message not acknowledged within this time.
        app.conf.broker_transport_options = {"visibility_timeout": settings.broker_visibility_seconds}
    return app


def is_amqp(broker_url: str) -> bool:
    """A RabbitMQ (AMQP) broker URL, as Celery's transports name them."""
    return broker_url.split("://", 1)[0].lower() in ("amqp", "amqps", "pyamqp", "librabbitmq")


class CeleryRunner:
    """The server's job runner under ``EXPORTER_RUNNER=celery``: no workers of its own."""

    def __init__(self, settings: ServiceSettings, store: Store):
        self.settings, self.store = settings, store
        self.app = make_celery(settings)
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._dispatch_loop, name="celery-dispatcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, operation: OperationRow) -> None:
        self.wake.set()  # the dispatcher sends it at once

    def pids(self) -> dict[str, int]:
        return {}  # the workers run elsewhere

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=10)

    def _dispatch_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.dispatch_once()
            except Exception:  # noqa: BLE001  (broker or store down a moment: the next round retries)
                log.exception("dispatch failed; retrying")
            self.wake.wait(1.0)
            self.wake.clear()

    def dispatch_once(self) -> int:
        """Requeue what no live worker holds, then send every queued operation not yet sent."""
        self.store.release_lost(
            None,
            self.settings.max_attempts,
            LOST_WORKER,
            liveness_seconds=self.settings.liveness_seconds,
            on_released=partial(clean_up_ended, self.settings),
        )
        rows = self.store.to_dispatch(self.settings.redispatch_seconds)
        sent = []
        try:
            for row in rows:
                self.app.send_task(TASK, args=[row.id], queue=queue_for(row.output_config.get("modelFormat")))
                sent.append(row.id)
        finally:
            if unsent := [row.id for row in rows if row.id not in sent]:
                self.store.mark_undispatched(unsent)
        return len(sent)
