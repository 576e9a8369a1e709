"""`make bench`: the platform's overhead, concurrency, added latency and status polling.

cli.py runs it (`python -m devtools.bench`) and says what each scenario measures. One module
per scenario (a_overhead, b_littles_law, c_latency, d_status), listed in registry.py; what
they share: session.py (options, the session, measuring), stack.py (processes and stores),
load.py (job bodies and HTTP load), profiling.py (py-spy), report.py (table and JSON).
bare.py, settings.py and urls.py are what the bench's Celery worker and web server load.

Nothing is imported here: the web server imports devtools.bench.settings, and must not pay
for the driver.
"""
