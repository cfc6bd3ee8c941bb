"""A failed trial told PRUNED without values (tuner.search.tell) still teaches TPE that its region fails:
TPE files it among the infeasible trials by its violated constraints, exactly as it did a COMPLETE trial with
penalty values (the same proposals follow), while a FAIL trial would teach it nothing (it proposes the failing
region again and again). The configuration's best lies next to the failing region, as a KV-cache-hungry
setting does next to oom."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tuner.search.objectives import Evaluation
from tuner.search.samplers import make_sampler, reads_pruned

SPACE = {"gpu-memory-utilization": FloatDistribution(0.1, 0.9), "max-num-seqs": IntDistribution(1, 64)}
N = 40
STARTUP = 10  # proposals before this are not counted (TPE's start-up and its first model)


def oom(params: dict[str, float]) -> bool:
    return params["gpu-memory-utilization"] > 0.5


def search(how: str, n_objectives: int, seed: int) -> list[dict[str, float]]:
    """Proposals of tuner's TPE when failed trials are told ``how``: ``pruned`` (tuner's rule),
    ``penalty`` (COMPLETE with penalty values: tuner before) or ``fail``."""
    sampler = make_sampler(
        "tpe", seed=seed, n_objectives=n_objectives, constraints_func=None, search_space=SPACE
    )
    directions = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE][:n_objectives]
    study = optuna.create_study(directions=directions, sampler=sampler)
    proposals = []
    for _ in range(N):
        trial = study.ask(SPACE)
        params = dict(trial.params)
        proposals.append(params)
        throughput = 100 * params["gpu-memory-utilization"] * (1 + params["max-num-seqs"] / 64)
        measured = Evaluation([throughput, 50.0][:n_objectives], {"failed": 0.0}, failure=None)
        ev = (
            Evaluation([0.0, 1100.0][:n_objectives], {"failed": 1.0}, failure="oom")
            if oom(params)
            else measured
        )
        if how == "fail" and ev.failure is not None:
            study.tell(trial, state=TrialState.FAIL)
            continue
        for k, c in ev.constraints.items():
            trial.set_constraint(k, c)
        state, values = ev.told(prune_failures=how == "pruned")
        study.tell(trial, values, state=state)
    return proposals


def oom_share(proposals: list[dict[str, float]]) -> float:
    later = proposals[STARTUP:]
    return sum(map(oom, later)) / len(later)


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_pruned_failures_teach_tpe_as_penalty_values_did_and_fail_would_not(n_objectives: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    assert reads_pruned("tpe") and not reads_pruned("gp") and not reads_pruned("nsga2")
    shares: dict[str, list[float]] = {how: [] for how in ("pruned", "penalty", "fail")}
    for seed in range(3):
        runs = {how: search(how, n_objectives, seed) for how in shares}
        assert runs["pruned"] == runs["penalty"]  # the same information reaches TPE's split
        for how, proposals in runs.items():
            shares[how].append(oom_share(proposals))
    mean = {how: sum(v) / len(v) for how, v in shares.items()}
    assert mean["pruned"] < 0.5 < mean["fail"], mean
