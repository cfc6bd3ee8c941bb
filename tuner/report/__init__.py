"""Reports on a stored study: the Pareto front (:mod:`.pareto`), as a table or CSV (:mod:`.table`), as a
plot (:mod:`.plot`), and one chosen configuration exported for ``vllm serve`` (:mod:`.export`).

All of them only read the study; Optuna computes the front (``study.best_trials``).
"""
