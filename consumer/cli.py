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
# The module of each top-level command: a command line naming one imports only its module (the
# service starts without the emulator's and the tools' imports). Checked against what the modules
# register by tests/unit/test_cli_frictions.py.
COMMAND_OF: dict[str, str] = {
    "run": "consumer.app",
    "rules": "consumer.rules.command",
    "emulator": "consumer.emulator.command",
    "dlq": "consumer.replay",
}

Handler = Callable[[argparse.Namespace], int]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given `argv` whose first argument is a command, only that
    command's module is imported (help and errors then list that command alone)."""
    parser = argparse.ArgumentParser(
        prog="braze-consumer",
        description="Kafka events in, Braze API-triggered Canvas and campaign sends out.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    first = argv[0] if argv else None
    modules = (COMMAND_OF[first],) if first in COMMAND_OF else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(argv).parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `braze-consumer rules preview ... | head`
        sys.stderr.close()
        return 0
