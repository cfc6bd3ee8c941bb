"""Bad input, each case through the real CLI entry point: one line naming the problem, exit status 2, no
traceback, and the existing study database beside it left byte-identical. Also: flags reach the server as an
argv list, never through a shell (a value full of shell syntax arrives verbatim as one argv element).

The unknown-flag check uses the installed vLLM's own argument parser; building it imports vLLM (10-40 s),
so the CLI cases here read a prepared option cache, and one test (marked vllm) builds the real parser.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import vllm_installed
from tests.faults.conftest import FAKE, ROOT
from tuner.cli.main import main
from tuner.config.argv import build_plan, shell_command
from tuner.config.spec import load_spec, spec_from_dict
from tuner.errors import UsageError
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.measure.trial import run_trial
from tuner.search.loop import run_study
from tuner.server.vllm_args import cache_path, check_flags, interpreter_of, known_options, vllm_origin

pytestmark = pytest.mark.timeout(300)

#: the options of a (pretend) vLLM, for the CLI cases: what a prepared cache file holds
KNOWN = [
    "--max-num-seqs", "--max-num-batched-tokens", "--max-model-len", "--gpu-memory-utilization",
    "--block-size", "--enable-prefix-caching", "--no-enable-prefix-caching", "--served-model-name",
]  # fmt: skip


def good_doc(model: Path) -> dict[str, Any]:
    return {
        "name": "bad-input",
        "model": str(model),
        "server": {"args": {"max-model-len": 512}},  # vLLM's own command: the flag check applies
        "search": {
            "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
            "max-num-seqs": {"low": 2, "high": 64},
            "block-size": {"choices": [16, 32]},
        },
        "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
        "slo": {"ttft_p99_ms": 1000},
        "n_trials": 2,
    }


def fake_trial(spec: Any, params: Any, **_: Any) -> TrialResult:
    m = {"output_throughput_tok_s": 10.0, "ttft_ms": {"p99": 100.0}, "completed": 8}
    return TrialResult(status="ok", summary=Summary.from_dict(m), flags=dict(params), argv=["vllm"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A good study file, its finished two-trial database, and a cache of vLLM's options."""
    d = tmp_path_factory.mktemp("bad-input")
    (d / "good.yaml").write_text(yaml.safe_dump(good_doc(tiny_model)))
    run_study(load_spec(d / "good.yaml"), trial_fn=fake_trial)
    assert (d / "bad-input.db").exists()
    return d


@pytest.fixture(autouse=True)
def option_cache(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the vLLM option cache at a prepared file (when vLLM is installed: else no check can run)."""
    monkeypatch.setenv("TUNER_CACHE_DIR", str(folder / "cache"))
    if vllm_installed():
        python = interpreter_of(["python", "-m", "vllm.entrypoints.openai.api_server"])
        assert python is not None
        origin = vllm_origin(python)
        assert origin is not None
        path = cache_path(python, origin)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"flags": KNOWN}))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.db*"))}


def variant(folder: Path, model: Path, name: str, change: Any) -> Path:
    """A study file: the good one changed by ``change`` (a function of the document, or raw text)."""
    path = folder / f"{name}.yaml"
    if isinstance(change, str):
        path.write_text(change)
    else:
        doc = copy.deepcopy(good_doc(model))
        change(doc)
        path.write_text(yaml.safe_dump(doc))
    return path


def assert_refused(
    folder: Path, capsys: pytest.CaptureFixture[str], argv: list[str], names: list[str]
) -> str:
    before = digest(folder)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("tuner: error: "), err
    assert "Traceback" not in err + out
    for name in names:
        assert name in lines[0], lines[0]
    assert digest(folder) == before
    return lines[0]


def _set(path: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        node = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return change


def _del(key: str) -> Any:
    return lambda doc: doc.pop(key)


FILE_CASES: dict[str, tuple[Any, list[str]]] = {
    "malformed YAML": ("name: x\nsearch: {max-num-seqs: [1, 2\n", ["malformed YAML", "line"]),
    "empty file": ("", ["empty"]),
    "not a mapping": ("- a\n- b\n", ["mapping"]),
    "wrong type: n_trials": (_set("n_trials", "many"), ["n_trials", "integer"]),
    "wrong type: input_tokens": (_set("workload.input_tokens", "lots"), ["workload.input_tokens"]),
    "wrong type: search entry": (_set("search.max-num-seqs", [2, 64]), ["search.max-num-seqs"]),
    "wrong type: server.command": (_set("server.command", "vllm serve"), ["server.command"]),
    "missing key": (_del("workload"), ["workload", "missing"]),
    "unknown key": (_set("colour", "blue"), ["colour", "unknown key"]),
    "unknown nested key": (_set("workload.speed", "fast"), ["workload.speed", "unknown key"]),
    "unknown range key": (_set("search.max-num-seqs", {"low": 2, "high": 8, "lg": True}), ["lg", "unknown key"]),
    "low > high": (_set("search.max-num-seqs", {"low": 64, "high": 2}), ["search.max-num-seqs", "must not exceed"]),
    "negative range": (_set("search.max-num-seqs", {"low": -4, "high": 8}), ["search.max-num-seqs", "positive"]),
    "negative fixed flag": (_set("server.args.max-num-batched-tokens", -1), ["max-num-batched-tokens", "positive"]),
    "negative choice": (_set("search.block-size", {"choices": [-16, 32]}), ["search.block-size", "positive"]),
    "negative workload": (_set("workload.requests", -5), ["workload.requests", "greater than 0"]),
    "negative SLO": (_set("slo.ttft_p99_ms", -1), ["slo.ttft_p99_ms"]),
    "memory fraction > 1: range": (
        _set("search.gpu-memory-utilization", {"low": 0.5, "high": 1.5}),
        ["gpu-memory-utilization", "(0, 1]"],
    ),
    "memory fraction > 1: fixed": (
        lambda d: (d["search"].pop("gpu-memory-utilization"), d["server"]["args"].update({"gpu-memory-utilization": 1.2})),
        ["server.args.gpu-memory-utilization", "(0, 1]"],
    ),
    "memory fraction > 1: choice": (
        _set("search.gpu-memory-utilization", {"choices": [0.5, 1.5]}),
        ["gpu-memory-utilization", "(0, 1]"],
    ),
    "memory fraction > 1: baseline": (
        lambda d: (d["search"].pop("gpu-memory-utilization"), d.update(baseline={"gpu-memory-utilization": 2})),
        ["baseline.gpu-memory-utilization", "(0, 1]"],
    ),
    "missing model folder": (_set("model", "./no-such-model"), ["model", "./no-such-model", "does not exist"]),
    "model is a file": (None, ["model", "is a file"]),  # the tiny model's config.json
    "bad storage URL in the file": (_set("storage", "oracle://db/x"), ["oracle", "not supported"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_study_file(
    folder: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    change, names = FILE_CASES[case]
    if change is None:
        change = _set("model", str(tiny_model / "config.json"))
    path = variant(folder, tiny_model, case.replace(" ", "_").replace(":", "").replace(">", "gt"), change)
    for command in ("run", "measure"):
        assert_refused(folder, capsys, [command, str(path)], names)


ARG_CASES: dict[str, tuple[list[str], list[str]]] = {
    "storage: unknown backend": (["run", "{good}", "--storage", "nope://somewhere"], ["nope", "not supported"]),
    "storage: does not parse": (["run", "{good}", "--storage", "::not a url::"], ["does not parse"]),
    "storage: no file": (["run", "{good}", "--storage", "sqlite://"], ["names no file"]),
    "storage: in memory": (["run", "{good}", "--storage", "sqlite:///:memory:"], ["in-memory"]),
    "storage: a folder": (["run", "{good}", "--storage", "sqlite:///{folder}"], ["is a folder"]),
    "storage: not a database": (["run", "{good}", "--storage", "sqlite:///{good}"], ["not a SQLite database"]),
    "resume: no database": (["resume", "{good}", "--storage", "sqlite:///{folder}/none.db"], ["no study database"]),
    "--set: not a number": (["measure", "{good}", "--set", "max-num-seqs=fast"], ["max-num-seqs", "number"]),
    "--set: not an integer": (["measure", "{good}", "--set", "max-num-seqs=2.5"], ["integer"]),
    "--set: no value": (["measure", "{good}", "--set", "max-num-seqs"], ["flag=value"]),
    "--set: a list": (["measure", "{good}", "--set", "max-num-seqs=[1, 2]"], ["single"]),
    "--set: tuner's own flag": (["measure", "{good}", "--set", "port=8000"], ["port"]),
    "--n-trials 0": (["run", "{good}", "--n-trials", "0"], ["positive"]),
    "--timeout soon": (["run", "{good}", "--timeout", "soon"], ["--timeout"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ARG_CASES))
def test_bad_arguments(folder: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    args, names = ARG_CASES[case]
    argv = [a.format(good=folder / "good.yaml", folder=folder) for a in args]
    assert_refused(folder, capsys, argv, names)


needs_vllm = pytest.mark.skipif(not vllm_installed(), reason="the flag check needs vLLM installed")


@needs_vllm
@pytest.mark.parametrize(
    ("change", "argv_extra", "names"),
    [
        (_set("server.args.max-num-seq", 8), [], ["server.args.max-num-seq", "did you mean --max-num-seqs?"]),
        (
            _set("search.enable-prefix-cachin", {"choices": [True, False]}),
            [],
            ["--enable-prefix-cachin ", "--no-enable-prefix-cachin", "did you mean --enable-prefix-caching?"],
        ),
        (
            lambda d: None,
            ["--set", "max-num-batched-token=512"],
            ["--set max-num-batched-token", "did you mean"],
        ),
    ],
    ids=["fixed", "searched", "--set"],
)
def test_unknown_vllm_flag(
    folder: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], change: Any, argv_extra: list[str],
    names: list[str],
) -> None:  # fmt: skip
    path = variant(folder, tiny_model, "unknown-flag", change)
    commands = ["measure"] if argv_extra else ["run", "resume", "measure"]
    for command in commands:
        line = assert_refused(folder, capsys, [command, str(path), *argv_extra], names)
        assert "the installed vLLM has no" in line


def test_unknown_flag_check_without_vllm() -> None:
    """The check itself, with an option list given (runs where vLLM is not installed too)."""
    doc = good_doc(Path("/m"))
    doc["server"]["args"]["max-num-seq"] = 8
    spec = spec_from_dict(doc, "s.yaml")
    with pytest.raises(
        UsageError, match=r"server.args.max-num-seq: --max-num-seq \(did you mean --max-num-seqs\?\)"
    ):
        check_flags(spec, known=frozenset(KNOWN))
    doc["server"]["args"].pop("max-num-seq")
    assert check_flags(spec_from_dict(doc, "s.yaml"), known=frozenset(KNOWN))
    fake = spec_from_dict({**doc, "server": {"command": ["python", str(FAKE)]}}, "s.yaml")
    assert known_options(fake.server.command) is None  # not vLLM's command: nothing to check against


def test_which_commands_are_checked_and_with_which_python() -> None:
    from tuner.server.vllm_args import is_vllm_command

    assert is_vllm_command(["python", "-m", "vllm.entrypoints.openai.api_server"])
    assert is_vllm_command(["vllm", "serve"]) and is_vllm_command(["/opt/venv/bin/vllm", "serve"])
    assert is_vllm_command(["python3", "-m", "vllm.entrypoints.cli.main", "serve"])
    assert not is_vllm_command(["python", str(FAKE)]) and not is_vllm_command(["python", "-m", "tuner.sim"])
    assert interpreter_of(["python", "-m", "vllm.entrypoints.openai.api_server"]) == sys.executable
    script = Path(sys.executable).parent / "vllm"  # a console script: its #! line names the interpreter
    if script.is_file():
        assert interpreter_of([str(script), "serve"]) == script.read_text().splitlines()[0][2:].split()[0]


def test_exit_status_of_the_real_process(folder: Path, tiny_model: Path) -> None:
    """The same through `python -m tuner`: the process exits 2 with one line, no traceback."""
    cases = {
        "malformed": ("name: [\n", "malformed YAML"),
        "missing-model": (_set("model", "./gone"), "does not exist"),
        "low-high": (_set("search.max-num-seqs", {"low": 9, "high": 2}), "must not exceed"),
    }
    before = digest(folder)
    for name, (change, text) in cases.items():
        path = variant(folder, tiny_model, f"proc-{name}", change)
        proc = subprocess.run(
            [sys.executable, "-m", "tuner", "run", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("tuner: error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert text in proc.stderr and "Traceback" not in proc.stderr
    assert digest(folder) == before


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_unknown_vllm_flag_against_the_real_parser(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    vllm_command: list[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))  # empty: the parser is built for real
    doc = good_doc(tiny_model)
    doc["server"]["args"].update({"max-num-seq": 8, "enable-prefix-caching": False})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    code = main(["run", str(tmp_path / "s.yaml")])
    err = capsys.readouterr().err
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert "server.args.max-num-seq: --max-num-seq (did you mean --max-num-seqs?)" in line, err
    assert "enable-prefix-caching" not in line  # --no-enable-prefix-caching is a real option
    assert not (tmp_path / "bad-input.db").exists()
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(good_doc(tiny_model)))
    assert check_flags(load_spec(tmp_path / "good.yaml"))  # the real vLLM knows these (cached now)
    assert list((tmp_path / "cache").glob("vllm-flags-*.json"))


# ------------------------------------------------------------------------------------- argv, not shell

SHELLY = "\"; rm -rf / ; $(touch {d}/pwned) `touch {d}/pwned2` && echo 'x' | cat > {d}/pwned3 #"


@pytest.mark.slow
def test_flag_values_reach_the_server_verbatim_as_one_argv_element(tmp_path: Path, tiny_model: Path) -> None:
    value = SHELLY.format(d=tmp_path)
    status = tmp_path / "events.jsonl"
    spec = spec_from_dict(
        {
            "name": "argv",
            "model": str(tiny_model),
            "server": {
                "command": ["python", str(FAKE)],
                "args": {"tag": value, "max-model-len": 512},
                "env": {"FAKE_VLLM_STATUS": str(status)},
                "startup_timeout_s": 30,
            },
            "workload": {"mode": "fixed", "input_tokens": 16, "output_tokens": 4, "concurrency": 1,
                         "requests": 2, "warmup_requests": 0},
        },
        str(tmp_path / "argv.yaml"),
    )  # fmt: skip
    result = run_trial(spec, {}, log_dir=tmp_path / "log", runtime_dir=tmp_path / "rt")
    assert result.status == "ok", result.message
    launched = [json.loads(line) for line in status.read_text().splitlines() if '"launched"' in line]
    argv = launched[0]["argv"]
    assert argv[argv.index("--tag") + 1] == value  # one element, byte for byte
    assert result.argv[result.argv.index("--tag") + 1] == value
    assert not list(tmp_path.glob("pwned*"))  # no shell ever ran it


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,6}){0,2}", fullmatch=True).filter(
            lambda n: n not in ("model", "host", "port") and not n.endswith(("-key", "-token"))
        ),
        st.one_of(st.text(min_size=1, max_size=40), st.integers(), st.booleans()),
        max_size=6,
    )
)
def test_argv_keeps_every_value_whole(args: dict[str, Any]) -> None:
    """Any flag value (spaces, quotes, shell syntax, newlines) is one argv element after its flag, and the
    copy-paste command line tuner prints splits back to the same argv."""
    spec = spec_from_dict(
        {"name": "p", "model": "org/m", "server": {"args": args},
         "workload": {"input_tokens": 8, "output_tokens": 4, "requests": 2}}
    )  # fmt: skip
    argv = build_plan(spec, {}, port=1234).argv
    for name, value in args.items():
        if value is True:
            assert f"--{name}" in argv
        elif value is False:
            assert f"--no-{name}" in argv
        elif isinstance(value, str) and value.lower() == "none":
            assert f"--{name}" not in argv
        else:
            assert argv[argv.index(f"--{name}") + 1] == str(value)
    assert shlex.split(shell_command(argv)) == argv
