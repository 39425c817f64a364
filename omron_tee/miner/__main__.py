import sys

from omron_tee.miner.neuron import main

sys.exit(main())
