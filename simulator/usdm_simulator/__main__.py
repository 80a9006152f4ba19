"""``python -m usdm_simulator``: run the exchange simulator (see ``usdm_simulator.cli``)."""

import sys

from usdm_simulator.cli import main

sys.exit(main())
