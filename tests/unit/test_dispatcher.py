"""The send dispatcher's worker threads: they end on close(), and at exit when nobody closed it
(as an executor's workers do), after the request under way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence

from consumer.batching import Batch, BatchItem
from consumer.braze.answers import HoldCause
from consumer.braze.retry import RecipientResult
from consumer.intents import BatchKey, Endpoint, SendIntent
from consumer.sending import Dispatcher, Finished

KEY = BatchKey(Endpoint.CANVAS_SEND, "canvas-1")


class Instant:
    def send_encoded(self, key: BatchKey, encoded: Sequence[bytes]) -> list[RecipientResult]:
        return [
            RecipientResult(
                index=i, outcome="sent", http_status=201, error="", attempts=1, first_failed_at=None
            )
            for i in range(len(encoded))
        ]

    def prepare_probe(self, cause: HoldCause) -> None:
        """Nothing to prepare."""


def batch(token: int) -> Batch[int]:
    intent = SendIntent("r", KEY, f"external_user_id:u-{token}", b'{"external_user_id":"u"}')
    return Batch(KEY, (BatchItem(intent, token),), 0)


def test_close_ends_the_workers() -> None:
    dispatcher: Dispatcher[int] = Dispatcher(Instant(), max_in_flight=3)
    for token in range(5):
        dispatcher.send(batch(token))
    finished: list[Finished[int]] = []
    deadline = time.monotonic() + 10
    while len(finished) < 5 and time.monotonic() < deadline:
        finished += dispatcher.collect(0.1)
    assert sorted(done.batch.items[0].token for done in finished) == [0, 1, 2, 3, 4]
    workers = list(dispatcher._workers)
    assert 1 <= len(workers) <= 3  # never more than max_in_flight
    dispatcher.close()
    for worker in workers:
        worker.join(5)
        assert not worker.is_alive()


def test_workers_end_at_exit_when_nobody_closed_the_dispatcher() -> None:
    script = textwrap.dedent(
        """
        from tests.unit.test_dispatcher import Instant, batch
        from consumer.sending import Dispatcher
        dispatcher = Dispatcher(Instant(), max_in_flight=4)
        for token in range(4):
            dispatcher.send(batch(token))
        print(len(dispatcher.collect(5.0)) >= 1)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "True"
    assert time.monotonic() - started < 15  # the workers noticed the main thread had ended
