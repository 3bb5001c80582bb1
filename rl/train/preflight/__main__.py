"""`python -m rl.train.preflight --config RECIPE [overrides] [dry-run flags]`."""

import sys

from rl.train.preflight.cli import main

sys.exit(main())
