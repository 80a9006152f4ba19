"""``python -m simulator``: run the exchange simulator (see ``simulator.cli``)."""

import sys

from simulator.cli import main

sys.exit(main())
