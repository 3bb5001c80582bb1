"""`python -m rl.launch.dryrun --config RECIPE [overrides] [dry-run flags]`."""

import sys

from rl.launch.dryrun.cli import main

sys.exit(main())
