"""The search: :mod:`.loop` (the ask/tell loop) over :mod:`.study` (open, budget, baseline),
:mod:`.workers` (liveness, requeue), :mod:`.signals` (Ctrl-C), :mod:`.objectives` (result -> values and
constraints), :mod:`.record` (the only owner of stored attributes), :mod:`.samplers`,
:mod:`.restart_cost` / :mod:`.trial_cost` (compile keys) and :mod:`.storage` (Optuna's RDB storage)."""
