"""Exit status + log tail -> a failure class. Pure. (Owned by the server work; see docstring contract.)

Classes (each stored with the trial, together with the last log lines):

* ``oom``              weights or the KV cache do not fit (GPU), or on the CPU build "less than desired CPU
                       memory utilization"; also "No available memory for the cache blocks".
* ``invalid_config``   vLLM rejected the flags: argparse errors (exit 2), pydantic ValidationError, an
                       unsupported block size / quantization / attention backend.
* ``startup_timeout``  not healthy before the deadline.
* ``crashed``          the server died while under load.
* ``load_errors``      too many requests failed while the server stayed up.
* ``port_in_use``      the port was taken between choice and bind (internal: the runner retries).
"""

from __future__ import annotations

FAILURE_CLASSES = ("oom", "invalid_config", "startup_timeout", "crashed", "load_errors")
#: not a property of the configuration: the trial is re-queued, not counted
INTERRUPTED = "interrupted"
#: a configuration refused before launch by a rule (no server start)
INFEASIBLE = "infeasible"
