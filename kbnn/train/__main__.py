"""`python -m kbnn.train`: see `kbnn.train.cli`."""

import sys

from kbnn.train.cli import main

sys.exit(main())
