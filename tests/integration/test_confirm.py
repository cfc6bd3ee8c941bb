"""``tuner confirm`` with an injected fake trial function (no vLLM): repeats of the leaders are trials of the
study with ``repeat_of``, outside the budget and the front; a kill -9 or Ctrl-C during a confirm neither loses
nor duplicates a repeat; ``best`` and ``status`` report the spread; bad input is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.integration.test_study_fake import Fake, load, synthetic, write_spec
from tuner.cli.main import main
from tuner.config.spec import Confirm, StudySpec
from tuner.errors import Interrupted
from tuner.measure.result import TrialResult
from tuner.report.pareto import front, pareto_rows
from tuner.search.loop import run_study
from tuner.search.record import read

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))  # never ~/.cache/vllm
    monkeypatch.setenv("TUNER_CHECK_VLLM_FLAGS", "0")
    (tmp_path / "m").mkdir()


def repeats_of(study: optuna.Study) -> dict[int, list[optuna.trial.FrozenTrial]]:
    out: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        r = read(t)
        if r.repeat_of is not None:
            out.setdefault(r.repeat_of, []).append(t)
    return out


def noisy(scale: float) -> Fake:
    """A fake whose repeats (every call after the search's) score ``scale`` x the first measurement."""

    def behaviour(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        return None if i < behaviour.search else scaled(params, scale)  # type: ignore[attr-defined]

    behaviour.search = 10**9  # type: ignore[attr-defined]
    return Fake(behaviour)


def scaled(params: Mapping[str, Any], factor: float) -> TrialResult:
    r = synthetic(params)
    assert r.summary is not None
    d = r.summary.to_dict()
    d["output_throughput_tok_s"] = d["output_throughput_tok_s"] * factor
    return TrialResult(**{**r.__dict__, "summary": type(r.summary).from_dict(d)})


def search_then_confirm(spec: StudySpec, fake: Fake, top: int, repeats: int) -> int:
    run_study(spec, trial_fn=fake)
    n = len(fake.calls)
    fake.behaviour.search = n  # type: ignore[union-attr]
    out = run_study(spec, trial_fn=fake, confirm=Confirm(top=top, repeats=repeats))
    assert out.stopped == "confirmed" and out.told == out.repeats
    return out.repeats


def test_confirm_repeats_the_leaders_outside_budget_and_front(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=6)
    fake = noisy(1.02)
    ran = search_then_confirm(spec, fake, top=2, repeats=2)
    study = load(spec)
    reps = repeats_of(study)
    base = next(t for t in study.trials if read(t).is_baseline)
    feasible = [t for t in study.trials if read(t).feasible and read(t).repeat_of is None]
    best_two = sorted(feasible, key=lambda t: -t.values[0])[:2]
    expected = {t.number for t in best_two} | {base.number}
    assert set(reps) == expected and ran == 2 * len(expected)
    for number, copies in reps.items():
        original = study.trials[number]
        assert len(copies) == 2
        assert all(read(c).run_params == read(original).run_params for c in copies)
        assert all(c.params == original.params and c.values[0] > original.values[0] for c in copies)
        assert all(read(c).is_baseline == read(original).is_baseline for c in copies)
    # repeats score higher than every original, yet are no rows of the front, and the budget is unchanged
    assert not any(read(t).repeat_of is not None for t in front(study))
    assert {r["trial"] for r in pareto_rows(study)} <= {t.number for t in study.trials if t.number < 6}
    again = run_study(spec, trial_fn=fake)
    assert again.told == 0 and again.complete == 6 and again.stopped == "budget"
    # confirmed enough: the same confirm runs nothing; one more repeat each runs one each
    assert run_study(spec, trial_fn=fake, confirm=Confirm(top=2, repeats=2)).told == 0
    assert run_study(spec, trial_fn=fake, confirm=Confirm(top=2, repeats=3)).repeats == len(expected)


def test_the_study_option_confirms_at_the_end_of_run(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=4, confirm={"top": 1, "repeats": 1})
    fake = Fake()
    out = run_study(spec, trial_fn=fake)
    assert out.complete == 4 and out.repeats >= 1 and out.told == 4 + out.repeats
    study = load(spec)
    assert sum(len(v) for v in repeats_of(study).values()) == out.repeats
    assert out.stopped == "confirmed"


def test_trial_function_sees_a_fresh_log_dir_per_repeat(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=3, baseline=False)
    dirs: list[str] = []

    def fn(spec: StudySpec, params: Mapping[str, Any], *, log_dir: Path, **_: Any) -> TrialResult:
        dirs.append(log_dir.name)
        return synthetic(params)

    run_study(spec, trial_fn=fn)
    run_study(spec, trial_fn=fn, confirm=Confirm(top=1, repeats=2))
    assert dirs == [f"trial-{n:04d}" for n in range(5)]


def test_ctrl_c_in_a_repeat_queues_it_again_as_a_repeat(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=4, baseline=False)
    run_study(spec, trial_fn=Fake())

    def interrupted(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        if i == 1:
            raise KeyboardInterrupt
        return None

    with pytest.raises(Interrupted):
        run_study(spec, trial_fn=Fake(interrupted), confirm=Confirm(top=1, repeats=3))
    study = load(spec)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and read(failed[0]).interrupted and read(failed[0]).repeat_of is not None
    out = run_study(spec, trial_fn=Fake(), confirm=Confirm(top=1, repeats=3))
    assert out.repeats == 2  # the interrupted one and the one never started; the first was kept
    assert [len(v) for v in repeats_of(load(spec)).values()] == [3]


WORKER = r"""
import os, sys
sys.path.insert(0, {root!r})
from tests.integration.test_study_fake import synthetic
from tuner.config.spec import Confirm, load_spec
from tuner.search.loop import run_study

calls = 0

def fake(spec, params, *, log_dir, runtime_dir, reporter=None, **_):
    global calls
    calls += 1
    if calls == 2:
        os._exit(9)  # as kill -9: the repeat stays RUNNING
    return synthetic(params)

run_study(load_spec(sys.argv[1]), trial_fn=fake, confirm=Confirm(top=2, repeats=2))
"""


def test_kill_9_during_confirm_loses_and_duplicates_no_repeat(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=5, baseline=False)
    run_study(spec, trial_fn=Fake())
    (tmp_path / "worker.py").write_text(WORKER.format(root=str(ROOT)))
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "fake.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr[-2000:]
    killed = [t for t in load(spec).trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1 and read(killed[0]).repeat_of is not None
    out = run_study(spec, trial_fn=Fake(), confirm=Confirm(top=2, repeats=2))
    study = load(spec)
    assert out.repaired == [killed[0].number]
    assert sorted(len(v) for v in repeats_of(study).values()) == [2, 2]
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert run_study(spec, trial_fn=Fake()).told == 0  # the budget is still full


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_best_and_status_report_mean_spread_and_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, n_trials=6, objectives=["maximize output_throughput"])
    fake = noisy(1.0)
    run_study(spec, trial_fn=fake)
    fake.behaviour.search = len(fake.calls)  # type: ignore[union-attr]
    # repeats of each leader at 0.5x and 1.5x: every range wide enough to overlap the runner-up's
    factors = iter([0.5, 1.5] * 10)
    fake.behaviour = lambda i, params: scaled(params, next(factors))
    run_study(spec, trial_fn=fake, confirm=Confirm(top=2, repeats=2))
    study_file = str(tmp_path / "fake.yaml")
    code, out, err = cli(capsys, "best", study_file, "--export", "cmd")
    assert code == 0 and "serve" in out
    lines = err.strip().splitlines()
    assert lines[0].startswith("picked trial ") and " over 3 runs" in lines[0] and " ± " in lines[0]
    assert "are within noise:" in lines[1] and lines[1].endswith("tok/s") and len(lines) == 3
    assert lines[2].startswith("best: trial ") and "vs vLLM's defaults (trial 0: " in lines[2]
    code, out, err = cli(capsys, "status", study_file)
    assert code == 0 and "6/6 finished" in out
    assert "confirmed (output_throughput, " in out and "over 3 runs (within noise of #" in out
    code, out, _ = cli(capsys, "status", study_file, "--json")
    row = json.loads(out)[0]
    assert row["finished"] == 6 and row["repeats"] == 6 and len(row["confirmed"]) == 3


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--top", "0"], "--top: expected a positive integer"),
        (["--repeats", "-1"], "--repeats: expected a positive integer"),
        (["--top", "x"], "--top: expected a positive integer"),
        (["--storage", "nosuch://x"], "storage"),
    ],
)
def test_confirm_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    write_spec(tmp_path)
    code, out, err = cli(capsys, "confirm", str(tmp_path / "fake.yaml"), *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("tuner: error: ") and needle in err


def test_confirm_of_a_study_never_run_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_spec(tmp_path)
    code, _, err = cli(capsys, "confirm", str(tmp_path / "fake.yaml"))
    assert code == 2 and "tuner run" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fake.db").exists()
