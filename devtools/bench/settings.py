"""The platform's settings with the benchmark's URLconf: the product's URLs plus a baseline view.

Only the web server of `make bench` uses this module (DJANGO_SETTINGS_MODULE); the product's
URLs never include the baseline.
"""

from __future__ import annotations

from webapp.settings import *  # noqa: F403

ROOT_URLCONF = "devtools.bench.urls"
