"""Benchmark of the batching stage: Batcher.add() (with due() per poll) and OffsetTracker speed.

Run from the repository root: python -m bench.batcher_bench [--intents N] [--keys K] [--users U]
"""

from __future__ import annotations

import argparse
import random
import time

from consumer.batching import Batcher
from consumer.intents import BatchKey, Endpoint, SendIntent
from consumer.offsets import OffsetTracker, TopicPartition

TP: TopicPartition = ("bench", 0)


def make_intents(count: int, keys: int, users: int, seed: int) -> list[SendIntent]:
    """Intents spread over `keys` Canvases and `users` users (repeats exercise the user rule)."""
    rng = random.Random(seed)
    batch_keys = [BatchKey(Endpoint.CANVAS_SEND, f"canvas-{k}") for k in range(keys)]
    intents = []
    for _ in range(count):
        user = f"u-{rng.randrange(users)}"
        intents.append(
            SendIntent("bench", rng.choice(batch_keys), f"external_user_id:{user}", b"x" * 64)
        )
    return intents


def bench_batcher(intents: list[SendIntent], poll_every: int) -> tuple[float, int, int]:
    """Seconds spent, batches out, recipients out; one due() per `poll_every` adds (a poll)."""
    batcher: Batcher[int] = Batcher(50, 500)
    batches = recipients = 0
    started = time.perf_counter()
    for offset, intent in enumerate(intents):
        now_ms = offset // 100  # 100 intents per simulated millisecond
        out = batcher.add(intent, offset, now_ms)
        if offset % poll_every == 0:
            out += batcher.due(now_ms)
        batches += len(out)
        recipients += sum(len(batch.items) for batch in out)
    out = batcher.flush()
    elapsed = time.perf_counter() - started
    return elapsed, batches + len(out), recipients + sum(len(b.items) for b in out)


def bench_tracker(count: int) -> float:
    """Seconds to track `count` one-intent messages and settle them in batches of 50."""
    tracker = OffsetTracker()
    started = time.perf_counter()
    for start in range(0, count, 50):
        for offset in range(start, min(start + 50, count)):
            tracker.track(TP, offset, 1)
        for offset in reversed(range(start, min(start + 50, count))):
            tracker.settle(TP, offset)
        tracker.take_commits()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--intents", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--poll-every", type=int, default=100)
    args = parser.parse_args()
    intents = make_intents(args.intents, args.keys, args.users, seed=1)
    elapsed, batches, recipients = bench_batcher(intents, args.poll_every)
    print(
        f"batcher: {args.intents} intents, {args.keys} keys, {args.users} users: "
        f"{elapsed:.2f} s, {args.intents / elapsed:,.0f} add/s, {batches} batches, "
        f"{recipients / batches:.1f} recipients/batch"
    )
    tracker_s = bench_tracker(args.intents)
    rate = args.intents / tracker_s
    print(f"tracker: {args.intents} track+settle: {tracker_s:.2f} s, {rate:,.0f}/s")


if __name__ == "__main__":
    main()
