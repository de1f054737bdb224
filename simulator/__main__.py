"""``python -m simulator``: the gna-simulate command line."""

import sys

from simulator.cli import main

sys.exit(main())
