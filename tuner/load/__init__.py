"""The load generator: streaming requests against an OpenAI-compatible server.

Layers, each behind a small seam so it can be tested alone:

* ``records``  — :class:`RequestRecord`, the raw timestamps of one request (no derived figures);
* ``client``   — one streaming request over an ``aiohttp`` session with an injected clock;
* ``prompts``  — prompts of an exact token length, built with the served model's own tokenizer;
* ``conversation`` / ``traffic`` — what is sent: conversations of one or more turns;
* ``arrivals`` — when conversations start in the open loop: Poisson, constant, gamma, a replayed trace;
* ``session``  — the history a later turn re-sends (the server's own replies);
* ``runner``   — :func:`~tuner.load.runner.offer_load`: warm-up, a request count or a duration, closed or
  open loop, sessions with think time, cancellation; returns records;
* ``cancel``   — :func:`~tuner.load.cancel.run_cancellable`: the load's event loop, which Ctrl-C cancels.

Metrics are computed from records in :mod:`tuner.measure.metrics`, in pure code.
"""
