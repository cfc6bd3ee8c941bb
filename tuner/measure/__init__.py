"""One trial measured: :mod:`.trial` runs it (argv -> server -> load steps -> :class:`TrialResult`);
the pure rules it applies are :mod:`.capacity` (the load ladder and the scored step), :mod:`.slo`,
:mod:`.quantile` (how sure a percentile is), :mod:`.metrics` (records -> summary) and :mod:`.memory`
(will it fit); :mod:`.telemetry` and :mod:`.envinfo` say what the server and the machine reported."""
