"""``python -m widedeep`` (and ``torchrun -m widedeep``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
