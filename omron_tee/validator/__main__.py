import sys

from omron_tee.validator.neuron import main

sys.exit(main())
