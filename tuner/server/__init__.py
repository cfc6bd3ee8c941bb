"""One vLLM server process: :mod:`.process` (start in its own group, health deadline, stop),
:mod:`.procs` (pids, pidfiles, leftovers), :mod:`.ports`, :mod:`.env` (environment and API key),
:mod:`.failures` (exit status + log -> failure class) and :mod:`.vllm_args` (vLLM's own flag table)."""
