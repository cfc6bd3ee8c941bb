"""``tuner confirm`` on the CPU build of vLLM: a 2-trial study, then one repeat of the leader (and of the
baseline) in fresh server starts, stored with ``repeat_of``, outside the budget and the front."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.e2e.test_study_real import tuner, vllm_processes, write_study
from tuner.search.record import read

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_confirm_a_real_study(tmp_path: Path, tiny_model: Path, vllm_command: list[str]) -> None:
    study = write_study(tmp_path, tiny_model, vllm_command, "confirmed", n_trials=2)
    proc = tuner("run", str(study))
    assert proc.returncode == 0, proc.stderr[-4000:]
    storage = f"sqlite:///{tmp_path / 'confirmed.db'}"
    before = optuna.load_study(study_name="confirmed", storage=storage).get_trials(deepcopy=False)
    leaders = {t.number for t in before if read(t).feasible}
    assert leaders, [(t.number, read(t).status, read(t).feasible) for t in before]

    proc = tuner("confirm", str(study), "--top", "1", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    s = optuna.load_study(study_name="confirmed", storage=storage)
    repeats = [read(t) for t in s.get_trials(deepcopy=False) if read(t).repeat_of is not None]
    assert repeats and all(r.state == optuna.trial.TrialState.COMPLETE for r in repeats)
    assert {r.repeat_of for r in repeats} <= leaders and len(repeats) == len({r.repeat_of for r in repeats})
    for r in repeats:
        original = read(s.trials[r.repeat_of or 0])
        assert r.run_params == original.run_params and r.status == "ok" and r.launched
        assert r.log_path and f"trial-{r.number:04d}" in r.log_path
    assert "over 2 runs" in proc.stdout, proc.stdout

    status = tuner("status", str(study), "--json")
    row = json.loads(status.stdout)[0]
    assert row["finished"] == 2 and row["repeats"] == len(repeats) and row["confirmed"]
    pareto = tuner("pareto", str(study), "--format", "json")
    assert pareto.returncode == 0, pareto.stderr
    assert {r["trial"] for r in json.loads(pareto.stdout)} <= {0, 1}
    again = tuner("confirm", str(study), "--top", "1", "--repeats", "1")  # confirmed enough: no server
    assert again.returncode == 0 and "0 repeat(s) measured" in again.stderr, again.stderr[-2000:]
    assert not vllm_processes(tiny_model)
