import sys

from order_execution.cli.main import main

sys.exit(main())
