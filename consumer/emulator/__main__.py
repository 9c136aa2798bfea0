"""`python -m consumer.emulator [options]` is `braze-consumer emulator [options]`, without loading
the rest of the service (a benchmark's stand-in for Braze starts lean)."""

from consumer.emulator.command import main

raise SystemExit(main())
