"""``python -m reinmax.tasks.bench``: the benchmark's command line, as ``reinmax bench``."""

import sys

from reinmax.tasks.bench import main

sys.exit(main())
