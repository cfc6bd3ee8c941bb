"""The load generator: streaming requests against an OpenAI-compatible server.

Layers, each behind a small seam so it can be tested alone:

* ``records``  — :class:`RequestRecord`, the raw timestamps of one request (no derived figures);
* ``client``   — one streaming request over an ``aiohttp`` session with an injected clock;
* ``prompts``  — prompts of an exact token length, built with the served model's own tokenizer;
* ``arrivals`` — when each request is sent: fixed concurrency or Poisson arrivals;
* ``runner``   — warm-up, a request count or a duration, cancellation; returns records.

Metrics are computed from records in :mod:`tuner.measure.metrics`, in pure code.
"""
