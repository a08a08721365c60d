"""``python -m reinmax.conformance``: the same as ``reinmax conformance``."""

import sys

from reinmax.conformance.cli import main

sys.exit(main())
