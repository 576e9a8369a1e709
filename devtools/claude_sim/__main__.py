"""`python -m devtools.claude_sim`: run the simulator until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

from devtools.claude_sim.cli import main

sys.exit(main())
