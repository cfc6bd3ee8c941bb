"""Server-side telemetry: what the server and the machine say while a trial runs.

* :mod:`tuner.measure.telemetry.prometheus` — parse vLLM's ``/metrics`` (Prometheus text) into
  :class:`~tuner.measure.telemetry.prometheus.VllmMetrics` and compute a run's delta with
  :func:`~tuner.measure.telemetry.prometheus.diff`; :func:`~tuner.measure.telemetry.prometheus.scrape` fetches the text.

Parsing is pure; only ``scrape`` does I/O.
"""
