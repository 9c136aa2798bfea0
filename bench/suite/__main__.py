"""`python -m bench.suite`: see bench/suite/main.py."""

import sys

from bench.suite.main import main

sys.exit(main())
