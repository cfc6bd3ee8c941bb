"""No stored-attribute key spelt outside tuner/search/record/: every ``.py`` file of tuner/, scripts/ and
bench/ reads and writes Optuna user attributes through the record module's functions and ``ATTR_*`` keys."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "tuner" / "search" / "record"

#: a string literal used as a user-attribute key: ``user_attrs.get("k")``, ``user_attrs["k"]``,
#: ``set_user_attr("k", ...)``, ``storage.set_trial_user_attr(id, "k", ...)``, ``user_attrs={..., "k": ...}``
RAW_KEY = re.compile(
    r"""user_attrs\s*\.\s*get\(\s*["']"""
    r"""|user_attrs\s*\[\s*["']"""
    r"""|set_user_attr\(\s*["']"""
    r"""|set_(?:trial|study)_user_attr\([^,()]*,\s*["']"""
    r"""|user_attrs\s*=\s*\{[^}]*["'][\w-]*["']\s*:"""
)


def raw_keys(text: str) -> list[int]:
    """Line numbers (1-based) where ``text`` uses a string literal as a user-attribute key."""
    return [text.count("\n", 0, m.start()) + 1 for m in RAW_KEY.finditer(text)]


def test_the_pattern_finds_each_form() -> None:
    text = (
        't.user_attrs.get("status")\n'
        "t.user_attrs['result']\n"
        'trial.set_user_attr("surplus", True)\n'
        'study.enqueue_trial({}, user_attrs={"is_baseline": True})\n'
        'study.add_trial(user_attrs={**old, "copy_of": 3})\n'
        'storage.set_trial_user_attr(trial_id, "heartbeat_at", 1.0)\n'
        "t.user_attrs.get(ATTR_BASELINE)\n"
        "trial.set_user_attr(k, v)\n"
        "storage.set_trial_user_attr(trial_id, ATTR_HEARTBEAT, 1.0)\n"
        "user_attrs={ATTR_BASELINE: True}\n"
    )
    assert raw_keys(text) == [1, 2, 3, 4, 5, 6]


def test_no_stored_attribute_key_outside_the_record_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for folder in ("tuner", "scripts", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if OWNER not in path.parents
        for line in raw_keys(path.read_text())
    ]
    assert not found, "user-attribute keys spelt outside tuner/search/record/: " + ", ".join(found)
