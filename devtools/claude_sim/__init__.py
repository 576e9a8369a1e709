"""A Claude simulator: an HTTP server speaking enough of the Messages API for the real SDK.

Run it as ``python -m devtools.claude_sim --port PORT`` (``--port 0`` picks a free
port) and point the SDK at it with ``ANTHROPIC_BASE_URL``. Once listening it
prints exactly one line, ``claude_sim listening on http://HOST:PORT``, and
nothing else: API keys and request bodies are never logged. SIGTERM and SIGINT
stop it cleanly. Tests can run it in-process instead:
``url, stop = serve_in_thread(port=0, latency_ms=..., fault_rate=..., rpm=..., seed=...)``.

It is one asyncio thread with a minimal HTTP/1.1 server (keep-alive,
Content-Length request bodies, chunked SSE answers), so hundreds of slow
requests wait concurrently without threads.

Modules: ``source`` reads the prompt, ``values`` finds typed values in it
(emails, dates, amounts, names...), ``answers`` fills the requested schema from
it, ``faults`` turns directives into outcomes, ``simulator`` decides each request
(outcome, answer, usage, cache), ``server`` speaks HTTP and SSE, ``cli`` is the
command line.

Endpoints
---------
``POST /v1/messages``
    Streaming (``"stream": true``) or not. A request with a JSON schema in
    ``output_config.format`` gets JSON fitting that schema, built from the text of
    the first user message without its directives (or, when that message fences
    a document in ``<tag>...</tag>`` or triple backticks, from the longest fenced
    part, so that instructions and label lists around it do not count): lead
    sentences for summaries (within a "max_words: N" / "at most N words" limit
    found in the prompt), sentences for string lists, the enum label with most
    word overlap. Other values are of the kind the property's name (else its
    description) asks for, copied from the text as a model would: an email, a
    phone number, a date (as written, or YYYY-MM-DD when the description says
    so), an identifier ("INV-2041"), an amount (a decimal, never an identifier's
    digits), a count, a person's name, a company, a venue, a title; a boolean is
    true when a sentence says the property's words without a negation; a list of
    strings gets every value of its kind ("speakers": the names), a list of
    objects with an amount or quantity one object per line item ("3 x VPS small
    at 12.00"). Without a schema the answer is the lead sentences as plain text. Answers longer than
    ``max_tokens`` are cut and end with ``stop_reason: "max_tokens"``.
    Usage is about one token per four characters. A system prompt given as text
    blocks with ``cache_control`` is cached: the first request with a given
    system text reports ``cache_creation_input_tokens``, later ones
    ``cache_read_input_tokens`` (there is no minimum length and no expiry).
``GET /_sim/stats``
    ``{"total", "by_outcome": {"ok", "invalid", "429", "529", "500", "400",
    "401", "timeout", "rate_limited", "midstream-error"}, "in_flight",
    "max_in_flight", "disconnected", "cpu_seconds", "options"}``. ``total`` counts
    every ``POST /v1/messages`` received and is the sum of ``by_outcome``;
    ``disconnected`` counts requests whose client hung up before the answer
    (or before the end of a streamed one).
``POST /_sim/reset``
    Zeroes the statistics, the per-text directive counters and the cache.
``GET /_sim/health``
    200 ``{"status": "ok"}``.

Fault directives
----------------
Directives are searched in the text of all user messages; a directive repeated
verbatim counts once (a repair round may quote the job text).

``[[sim:429*N]]``, ``[[sim:529*N]]``, ``[[sim:500*N]]``, ``[[sim:timeout*N]]``,
``[[sim:invalid*N]]``
    Counted directives. Requests are numbered per *job text*, the text of the
    first user message, so a retry and a repair round of one job share one
    counter. Request number k (1-based) gets the outcome of the first counted
    directive whose cumulative range covers k, in the order the directives
    appear in the text; later requests succeed. ``[[sim:429*2]] [[sim:invalid*1]]``
    gives 429, 429, invalid output, then valid output. A 429 carries
    ``retry-after: 1``; ``timeout`` holds the request for 600 s (the client gives
    up first); ``invalid`` answers HTTP 200 with output that violates the schema
    (a required field missing, or prose instead of JSON).
``[[sim:midstream-error]]``, ``[[sim:midstream-error*N]]``
    Counted like the others (once without ``*N``): a streamed answer stops halfway
    through its deltas with the ``error`` event the real API sends when it is
    overloaded mid-answer (``overloaded_error``), after ``message_start`` has
    reported the input and cache usage. A request that does not stream gets the
    529 the same overload would give.
``[[sim:400]]``, ``[[sim:401]]``
    Every such request fails with that status, before any counted directive
    (and without advancing the counter). The first one in the text wins.
``[[sim:latency=MS]]``
    This request's answer takes MS milliseconds instead of ``--latency-ms``.

Latency applies to HTTP 200 answers only: errors come back at once, as the
real API's rate-limit and overload errors do. A streamed answer starts at once
and spreads its text deltas evenly over the latency, as a model writes them.
On top of the directives, the ``--rpm`` limit answers 429 (outcome
``rate_limited``) before a request is numbered, and ``--fault-rate`` turns that
fraction of would-be-200 answers into a random 429, 529 or 500 (after the
request was numbered, counted under that status).
"""

from __future__ import annotations

from devtools.claude_sim.faults import Directives
from devtools.claude_sim.server import BANNER, serve_in_thread, url_from_banner
from devtools.claude_sim.simulator import SimOptions

__all__ = ["BANNER", "Directives", "SimOptions", "serve_in_thread", "url_from_banner"]
