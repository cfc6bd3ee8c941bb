"""tuner: find the best way to serve a model with vLLM, and prove it.

Data flows one way::

    study file -> StudySpec -> params -> argv -> server -> load -> records
               -> summary -> objectives -> Optuna storage -> reports

Pure modules (no I/O): ``spec``, ``space``, ``flags``, ``failures``, ``metrics``, ``objectives``,
``report.pareto``. The I/O shell: ``server``, ``load``, ``telemetry``, ``study``, ``cli``.
"""

__version__ = "0.1.0"
