"""The study file and what follows from it alone: :mod:`.spec` (the validated :class:`StudySpec`),
:mod:`.paths` (where its files are), :mod:`.space` (Optuna distributions and the rules known before
launch), :mod:`.argv` (params -> server argv) and :mod:`.redact` (secrets out of what is stored). Pure."""
