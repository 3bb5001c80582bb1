"""`python -m rl.dryrun --config RECIPE [overrides] [dry-run flags]`."""

import sys

from rl.dryrun.cli import main

sys.exit(main())
