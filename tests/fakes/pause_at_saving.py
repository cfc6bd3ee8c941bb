"""``tuner run|resume STUDY.yaml`` that stops in the middle of storing one trial's result, for a kill -9 test.

Usage::

    python tests/fakes/pause_at_saving.py run|resume STUDY.yaml TRIAL_NUMBER MARKER_FILE

It runs the study as ``tuner run`` does (:func:`tuner.search.loop.run_study` with the file's storage and
budget), with a reporter injected in place of the CLI's: when the loop reports ``phase("saving")`` for trial
``TRIAL_NUMBER`` (the first attribute of its result is stored, the trial is still RUNNING), it writes
``saving`` to ``MARKER_FILE`` and sleeps, so that the test can ``kill -9`` it there. Exits as ``tuner`` does
on a :class:`~tuner.errors.TunerError`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tuner.config.spec import load_spec
from tuner.errors import TunerError
from tuner.progress import NullReporter
from tuner.search.loop import run_study


class PauseAtSaving(NullReporter):
    """Sleeps once trial ``number``'s result is half stored, after writing ``saving`` to ``marker``."""

    def __init__(self, number: int, marker: Path) -> None:
        self.number = number
        self.marker = marker
        self.current: int | None = None

    def trial_started(self, number: int, total: int | None, params: dict[str, object]) -> None:
        self.current = number

    def phase(self, name: str, detail: str = "") -> None:
        if name == "saving" and self.current == self.number:
            self.marker.write_text(name)
            time.sleep(3600)


def main(argv: list[str]) -> int:
    command, study, number, marker = argv
    reporter = PauseAtSaving(int(number), Path(marker))
    try:
        run_study(load_spec(study), reporter=reporter, must_exist=command == "resume")
    except TunerError as e:
        print(f"tuner: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
