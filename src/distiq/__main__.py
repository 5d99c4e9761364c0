"""``python -m distiq`` is the ``distiq`` command."""

import sys

from distiq.cli.main import main

sys.exit(main())
