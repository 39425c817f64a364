"""omron-tee validator (run with python3 or pm2; `python3 validator.py --help` lists the flags)."""

import sys
from pathlib import Path

# Allow running from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.validator.neuron import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
