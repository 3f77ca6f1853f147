"""User docs and settings speak to users: things are named by what they are, never by tracker
terms (an issue number, or a "seed 00x" specification) that a user cannot look up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from training.grit import GritConfig
from training.sft import SftSettings

ROOT = Path(__file__).resolve().parent.parent
TRACKER_TERMS = re.compile(r"\b[Ii]ssues? [0-9]+|\b[Ss]eeds? ?0{0,2}[0-4]\b")
USER_FILES = sorted({ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md"),
                     *ROOT.glob("configs/*.yaml")})


def test_user_docs_and_config_comments_use_no_tracker_terms() -> None:
    hits = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path in USER_FILES
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if TRACKER_TERMS.search(line)]
    assert hits == [], "\n".join(hits)


def test_the_pattern_finds_what_it_should() -> None:
    for text in ("(issue 6)", "seed 002's preset", "Seed 000", "seed003", "issues 2"):
        assert TRACKER_TERMS.search(text), text
    for text in ("seed 42", "--seed N", "reissue 3x"):
        assert not TRACKER_TERMS.search(text), text


def test_grit_preset_periodic_and_its_earlier_name() -> None:
    assert SftSettings(optimizer="grit", grit_preset="periodic").grit_preset == "periodic"
    assert SftSettings(optimizer="grit", grit_preset="seed003").grit_preset == "seed003"
    assert GritConfig.periodic() == GritConfig.seed003()
    assert (GritConfig.periodic().update_every, GritConfig().update_every) == (20, 1)
    with pytest.raises(ValueError, match="grit_preset must be periodic or default"):
        SftSettings(optimizer="grit", grit_preset="fast")
