"""The dashboard in a real browser: headless Chromium (the distribution's ``chromium`` and ``chromium-driver``,
driven by selenium) on the study page while ``tuner run`` runs a study against the simulator server.

It waits for the live update to show a further trial without reloading the page, checks the number of trials
and of front points shown against the database, clicks through to a trial, and saves screenshots under the
test's tmp folder (``TUNER_SCREENSHOTS=DIR`` copies them there too: how docs/img/ got its two). Without the
browser, its driver or selenium it says what is missing and skips (``make test`` installs them on a Debian
machine it is root on).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.studyfiles import SIM_SERVER, write_study_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
TRIALS = 5


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium (pip install selenium)"
    if CHROMIUM is None:
        return "chromium (apt-get install chromium)"
    if DRIVER is None:
        return "chromedriver (apt-get install chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _finished(url: str, name: str) -> int:
    from tuner.web.readonly import open_readonly

    try:
        study = optuna.load_study(study_name=name, storage=open_readonly(url))
    except Exception:
        return 0
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    missing = _missing()
    if missing:
        pytest.skip(f"the browser test needs {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _study_file(tmp_path: Path, model: Path) -> Path:
    spec = {
        "name": "browser",
        "storage": f"sqlite:///{tmp_path / 'browser.db'}",
        "model": str(model),
        "server": SIM_SERVER,
        "search": {"max-num-seqs": {"low": 2, "high": 32, "log": True}, "block-size": {"choices": [32, 64]}},
        "workload": {
            "input_tokens": 16,
            "output_tokens": 8,
            "requests": 8,
            "warmup_requests": 1,
            "capacity": {"levels": [1, 2, 4], "requests_per_step": 8},
        },
        "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 500},
        "n_trials": TRIALS,
        "results_dir": str(tmp_path / "runs"),
    }
    return write_study_file(tmp_path, spec)


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def test_study_page_follows_a_running_study(browser: Any, tiny_model: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    spec = _study_file(tmp_path, tiny_model)
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    tuner = [sys.executable, "-m", "tuner"]
    run = _start([*tuner, "run", str(spec)], tmp_path / "run.log")
    port = _free_port()
    dash: subprocess.Popen[bytes] | None = None
    try:
        _wait("the first finished trial", lambda: _finished(url, "browser") >= 1, 120)
        dash = _start(
            [*tuner, "dashboard", str(spec), "--port", str(port), "--interval", "0.5"],
            tmp_path / "dashboard.log",
        )
        _wait("the dashboard", lambda: _listening(port), 60)
        browser.get(f"http://127.0.0.1:{port}/study/browser")
        table = browser.find_element(By.ID, "trials")
        first = int(table.get_attribute("data-count"))
        browser.execute_script("window.__notReloaded = true;")
        _wait("the live update to show another trial", lambda: _count(browser) > first, 120)
        assert browser.execute_script("return window.__notReloaded === true;"), "the page reloaded"
        assert run.wait(timeout=180) == 0, (tmp_path / "run.log").read_text()[-2000:]
        total = len(optuna.load_study(study_name="browser", storage=url).trials)
        _wait("every trial on the page", lambda: _count(browser) == total, 30)
        shown = int(browser.find_element(By.ID, "front-points").text)
        assert shown == _front_points(url) > 0
        plot = browser.find_element(By.ID, "plot")
        assert plot.find_elements(By.CSS_SELECTOR, ".main-svg"), "plotly drew nothing"
        shots = [tmp_path / "study.png", tmp_path / "trial.png"]
        browser.save_screenshot(str(shots[0]))
        browser.find_element(By.CSS_SELECTOR, "#trials tbody tr:nth-child(2) a").click()
        _wait("the trial page", lambda: "trial 1" in browser.find_element(By.TAG_NAME, "h1").text, 20)
        assert browser.find_elements(By.ID, "steps")
        browser.save_screenshot(str(shots[1]))
        assert all(p.stat().st_size > 10_000 for p in shots)
        if os.environ.get("TUNER_SCREENSHOTS"):
            for p in shots:
                shutil.copy(p, Path(os.environ["TUNER_SCREENSHOTS"]) / f"dashboard-{p.name}")
    finally:
        _stop(run)
        if dash is not None:
            _stop(dash)


def _count(browser: Any) -> int:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return int(browser.find_element(By.ID, "trials").get_attribute("data-count"))
    except (WebDriverException, TypeError, ValueError):
        return -1


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def _front_points(url: str) -> int:
    from tuner.web.cache import load
    from tuner.web.plot import front_points
    from tuner.web.readonly import open_readonly

    study = optuna.load_study(study_name="browser", storage=open_readonly(url))
    return front_points(load(study, None, time.time()).picture)
