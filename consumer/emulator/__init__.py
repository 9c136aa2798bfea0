"""A strict local Braze REST emulator for development, demos and tests (product.md, "emulator").

`start_emulator` runs one in-process; `EmulatorControl` drives its control API over HTTP;
`braze-consumer emulator` runs one from the command line.
"""

from consumer.emulator.control import EmulatorControl, EmulatorControlError
from consumer.emulator.server import RunningEmulator, start_emulator

__all__ = ["EmulatorControl", "EmulatorControlError", "RunningEmulator", "start_emulator"]
