"""`python -m devtools.bench`: see cli.py for what it measures."""

from __future__ import annotations

import sys

from devtools.bench.cli import main

sys.exit(main())
