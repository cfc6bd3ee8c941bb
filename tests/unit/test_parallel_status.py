"""What ``tuner status`` shows per worker (tuner.search.workers.running_workers, tuner.cli.status)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tuner.cli.status import describe_worker
from tuner.search import record
from tuner.search.workers import Worker, running_workers


def test_each_running_trial_names_its_worker_gpus_and_heartbeat() -> None:
    study = optuna.create_study()
    a, b, c = study.ask(), study.ask(), study.ask()
    w = Worker("gpu-host-1", 41, 7, "boot", gpus=("2", "3"))
    a.set_user_attr(record.ATTR_WORKER, w.to_dict())
    a.set_user_attr(record.ATTR_HEARTBEAT, 1000.0)
    b.set_user_attr(record.ATTR_WORKER, Worker("gpu-host-0", 9, None, None).to_dict())
    study.tell(c, 1.0)
    rows = running_workers(study.get_trials(deepcopy=False), now=1012.0)
    assert [r["trial"] for r in rows] == [1, 0]  # by host
    assert rows[1] == {
        "host": "gpu-host-1",
        "pid": 41,
        "gpus": ["2", "3"],
        "trial": 0,
        "heartbeat_age_s": 12.0,
    }
    assert rows[0]["gpus"] is None and rows[0]["heartbeat_age_s"] is None
    assert describe_worker(rows[1]) == "worker gpu-host-1 pid 41 on GPU 2,3: trial 0, heartbeat 12 s ago"
    assert describe_worker(rows[0]) == "worker gpu-host-0 pid 9: trial 1, no heartbeat"
    assert study.trials[2].state == TrialState.COMPLETE
