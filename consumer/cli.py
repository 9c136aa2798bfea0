"""The `braze-consumer` command line: each command module registers its own sub-command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from consumer import __version__

# Modules exposing `register(subparsers)`; each sets `handler` (args -> exit code) on its parser.
COMMAND_MODULES: tuple[str, ...] = (
    "consumer.app",
    "consumer.rules.command",
    "consumer.emulator.command",
    "consumer.replay",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braze-consumer",
        description="Kafka events in, Braze API-triggered Canvas and campaign sends out.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `braze-consumer rules preview ... | head`
        sys.stderr.close()
        return 0
