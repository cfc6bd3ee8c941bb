"""What the server and the machine say while a trial runs, beside what the client measured.

What a trial uses (:mod:`tuner.measure.trial`):

* :mod:`~tuner.measure.telemetry.nvml` — :class:`~tuner.measure.telemetry.nvml.GpuSampler` (GPU
  utilisation, memory, power, clock, temperature during the load), :func:`~tuner.measure.telemetry.nvml.static_facts`
  (the cards, for the memory check and :mod:`tuner.measure.envinfo`) and
  :func:`~tuner.measure.telemetry.nvml.gpu_memory_used_mib`, the one GPU-memory probe (a stopped server's
  memory coming back: :class:`tuner.server.process.VllmServer`).
* :mod:`~tuner.measure.telemetry.serverside` — :class:`~tuner.measure.telemetry.serverside.MetricsPoller`
  (vLLM's ``/metrics`` scraped during the load) -> :class:`~tuner.measure.telemetry.serverside.ServerSideView`,
  the one-word :func:`~tuner.measure.telemetry.serverside.bottleneck`, and
  :func:`~tuner.measure.telemetry.serverside.agreement` (the server's latency and token counts over the
  measured phase, from two :func:`~tuner.measure.telemetry.serverside.scrape_text` scrapes, beside the client's).
* :mod:`~tuner.measure.telemetry.prometheus` — the pure parser under both:
  :func:`~tuner.measure.telemetry.prometheus.parse`, :func:`~tuner.measure.telemetry.prometheus.vllm_metrics`
  (vLLM's names across versions), :func:`~tuner.measure.telemetry.prometheus.counter_delta` and
  :func:`~tuner.measure.telemetry.prometheus.histogram_delta`.

Parsing is pure; the sampler, the poller and the scrapes do the I/O. None of them raises for a missing GPU
or an odd ``/metrics``: what cannot be read is left out.
"""
