"""`braze-consumer emulator` (or `python -m consumer.emulator`): run the local Braze REST emulator
until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from consumer.emulator.budget import BRAZE_REQUESTS_PER_HOUR
from consumer.emulator.server import start_emulator

DESCRIPTION = (
    "Serve the Braze API-triggered send and schedule endpoints with validation, "
    "X-RateLimit-* headers and 429s, plus a control API under /_emulator/."
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "emulator", help="run a strict local Braze REST emulator", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    """`python -m consumer.emulator [options]`: the same as `braze-consumer emulator [options]`."""
    parser = argparse.ArgumentParser(prog="python -m consumer.emulator", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="an accepted REST API key (repeatable); default: $BRAZE_API_KEY",
    )
    parser.add_argument("--requests-per-hour", type=_positive, default=BRAZE_REQUESTS_PER_HOUR)
    parser.add_argument("--requests-per-second", type=_positive, default=None)
    parser.add_argument("--seed", type=int, default=None, help="seed for injected faults")


def run(args: argparse.Namespace) -> int:
    api_keys = args.api_keys or [key for key in [os.environ.get("BRAZE_API_KEY", "")] if key]
    if not api_keys:
        print(
            "braze-consumer emulator: no API key; pass --api-key KEY or set BRAZE_API_KEY",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        emulator = start_emulator(
            api_keys=api_keys,
            host=args.host,
            port=args.port,
            requests_per_hour=args.requests_per_hour,
            requests_per_second=args.requests_per_second,
            seed=args.seed,
        )
        print(f"braze emulator listening on {emulator.url}", flush=True)
        # A timed wait keeps the main thread returning to Python, where signal handlers run.
        while not stop.wait(0.5):
            pass
        emulator.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
