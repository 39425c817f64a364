"""``python -m omron_tee``: the ``omron-tee`` command."""

import sys

from omron_tee.cli import main

sys.exit(main())
