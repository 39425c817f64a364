"""``python -m omron_tee.cli`` (the enclave image runs the miner this way)."""

import sys

from omron_tee.cli import main

sys.exit(main())
