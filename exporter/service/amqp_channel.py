"""A RabbitMQ channel that survives the broker closing it many times over while a job runs.

RabbitMQ (3.10 measured) checks ``consumer_timeout`` on every channel tick and sends one
``channel.close`` per tick until the client answers. A worker whose solo pool is busy with a long
job answers only when the job ends, and then finds one Close per tick waiting in its socket (144
after 30 s with a 200 ms tick). py-amqp answers the first with CloseOk and reopens the channel
(``Channel._do_revive``) while it waits for OpenOk, reading the next stale Close, which it answers
again and reopens again: each nests one level deeper (RecursionError: "Unrecoverable error", the
worker exits), or the extra CloseOk reaches the reopened channel and RabbitMQ closes the whole
connection (COMMAND_INVALID). Upstream: celery/py-amqp issue 417, pull request 380 (open).

A Close that arrives while the channel waits for the OpenOk of its own revive was sent before
the broker read our CloseOk (the broker answers Open with OpenOk before it could close the new
channel), so it is already answered: it is dropped here, and the channel reopens once.
"""

from __future__ import annotations

from kombu.transport import pyamqp


class StaleCloseTolerantChannel(pyamqp.Channel):
    """kombu's AMQP channel, reopened once however many Closes the broker queued before ours."""

    _reviving = False

    def _on_close(self, reply_code, reply_text, class_id, method_id):
        if self._reviving:
            return  # a Close of the incarnation already closed and answered
        return super()._on_close(reply_code, reply_text, class_id, method_id)

    def _do_revive(self):
        self._reviving = True
        try:
            super()._do_revive()
        finally:
            self._reviving = False


def use_stale_close_tolerant_channels() -> None:
    """Make every AMQP connection kombu opens in this process use the channel above."""
    pyamqp.Connection.Channel = StaleCloseTolerantChannel
