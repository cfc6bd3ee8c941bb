"""A study file changed between runs (tuner.search.study): a change that invalidates the stored trials is
refused with the change named and the database untouched, unless accept_changes; harmless changes go
through with a note; the traffic digest stops a resume after a file the workload names changed; an older
study without a digest gets one silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.integration.test_study_fake import SEARCH, Fake, load, write_spec
from tuner.config.paths import default_storage
from tuner.errors import UsageError
from tuner.progress import NullReporter
from tuner.search.loop import run_study
from tuner.search.record import ATTR_TRAFFIC_DIGEST, read_study


class Notes(NullReporter):
    """A reporter that keeps the messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def db_bytes(spec: Any) -> bytes:
    return Path(default_storage(spec).removeprefix("sqlite:///")).read_bytes()


def test_a_changed_slo_is_refused_naming_it_and_nothing_is_stored(tmp_path: Path) -> None:
    run_study(write_spec(tmp_path, n_trials=2), trial_fn=Fake())
    changed = write_spec(tmp_path, n_trials=2, slo={"ttft_p99_ms": 100})
    before = db_bytes(changed)
    with pytest.raises(UsageError) as e:
        run_study(changed, trial_fn=Fake(), n_trials=4)
    text = str(e.value)
    assert "slo.ttft_p99_ms 2000.0 -> 100.0" in text and "--accept-changes" in text and "2 stored" in text
    assert "\n" not in text
    assert db_bytes(changed) == before


def test_accept_changes_stores_the_new_file_and_keeps_the_old_trials(tmp_path: Path) -> None:
    run_study(write_spec(tmp_path, n_trials=2), trial_fn=Fake())
    search = {**SEARCH, "max-num-seqs": {"low": 2, "high": 128, "log": True}}
    changed = write_spec(tmp_path, n_trials=3, search=search)
    notes = Notes()
    out = run_study(changed, trial_fn=Fake(), n_trials=3, reporter=notes, accept_changes=True)
    assert out.told == 1 and out.complete == 3
    accepted = [line for line in notes.lines if line.startswith("--accept-changes")]
    assert len(accepted) == 1 and "search.max-num-seqs.high 64 -> 128" in accepted[0]
    assert "the 2 trial(s) stored before stay" in accepted[0]
    stored = read_study(load(changed)).spec
    assert stored is not None and stored["search"]["max-num-seqs"]["high"] == 128
    notes = Notes()
    run_study(changed, trial_fn=Fake(), reporter=notes)  # stored now: no change, nothing said
    assert notes.lines == []


def test_a_distribution_optuna_cannot_mix_is_refused_even_when_accepted(tmp_path: Path) -> None:
    run_study(write_spec(tmp_path, n_trials=2), trial_fn=Fake())
    changed = write_spec(tmp_path, search={**SEARCH, "max-num-seqs": {"low": 2, "high": 64}})  # log dropped
    before = db_bytes(changed)
    with pytest.raises(UsageError, match=r"search\.max-num-seqs cannot change that way .* new name"):
        run_study(changed, trial_fn=Fake(), n_trials=3, accept_changes=True)
    assert db_bytes(changed) == before


def test_harmless_changes_go_through_with_one_line(tmp_path: Path) -> None:
    run_study(write_spec(tmp_path, n_trials=2), trial_fn=Fake())
    notes = Notes()
    changed = write_spec(tmp_path, n_trials=3, seed=7, sampler="random")
    out = run_study(changed, trial_fn=Fake(), n_trials=3, reporter=notes)
    assert out.complete == 3
    (line,) = notes.lines
    assert line.startswith("study file changed (") and "n_trials 2 -> 3" in line and "sampler" in line


def test_a_changed_lengths_file_stops_the_resume(tmp_path: Path) -> None:
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("12\n16\n20\n")
    workload = {
        "input_tokens": {"dist": "empirical", "file": "lengths.csv"},
        "output_tokens": 8,
        "requests": 8,
    }
    spec = write_spec(tmp_path, n_trials=2, workload=workload)
    run_study(spec, trial_fn=Fake())
    digest = read_study(load(spec)).traffic_digest
    assert digest is not None and len(digest) == 64
    lengths.write_text("12\n16\n2000\n")
    before = db_bytes(spec)
    with pytest.raises(UsageError) as e:
        run_study(spec, trial_fn=Fake(), n_trials=3)
    text = str(e.value)
    assert f"the traffic changed since the study started (digest {digest[:12]} -> " in text
    assert "workload.input_tokens.file: lengths.csv" in text
    assert db_bytes(spec) == before
    out = run_study(spec, trial_fn=Fake(), n_trials=3, accept_changes=True)
    assert out.told == 1 and read_study(load(spec)).traffic_digest not in (None, digest)


def test_an_older_study_without_a_digest_or_metric_names_gets_them_silently(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=2)
    run_study(spec, trial_fn=Fake())
    study = load(spec)
    study.set_user_attr(ATTR_TRAFFIC_DIGEST, None)  # as an older tuner stored it: no digest
    storage = optuna.storages.RDBStorage(default_storage(spec))
    study_id = storage.get_study_id_from_name(spec.name)
    storage.set_study_system_attr(study_id, "study:metric_names", None)  # nor Optuna's metric names
    assert read_study(load(spec)).traffic_digest is None
    notes = Notes()
    run_study(spec, trial_fn=Fake(), n_trials=3, reporter=notes)
    assert notes.lines == []
    again = load(spec)
    assert read_study(again).traffic_digest is not None
    assert again.metric_names == ["output_throughput", "ttft_p99"]
