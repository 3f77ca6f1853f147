"""The record auditor's prior-shift correction (training/answer_prior.py): the bias is Bayes'
log-odds difference, and a model saved with it answers with the bias wherever it is loaded."""

from __future__ import annotations

import math

import pytest
import torch
from test_embedded_model import TINY

from scoring.record_audit import ANSWER_NONE, ANSWER_OPEN
from training.answer_prior import apply_correction, none_share, prior_correction
from training.embedded_model import build_embedded_base_model, load_base_model
from training.inference import DecodingSettings, LocalGenerator


class _OneTokenEach:
    """A tokenizer stub: the answer pieces are single tokens, anything else two."""

    def encode(self, text, add_special_tokens=False):
        return [7] if text in (ANSWER_NONE, ANSWER_OPEN) else [1, 2]


def _rows(n_none: int, n_findings: int) -> list[dict]:
    answers = [ANSWER_NONE] * n_none + [ANSWER_OPEN + 'zero_duration"}]}'] * n_findings
    return [{"messages": [{"role": "user", "content": "r"},
                          {"role": "assistant", "content": a}]} for a in answers]


def test_bias_is_the_log_odds_between_use_and_training_priors():
    rows = _rows(50, 50)
    assert none_share(rows, ANSWER_NONE) == 0.5
    correction = prior_correction(_OneTokenEach(), rows, ANSWER_NONE, use_deviation_rate=0.02)
    assert correction["applied"] and correction["token_id"] == 7
    assert correction["no_findings_bias"] == pytest.approx(math.log(0.98 / 0.02), abs=1e-4)
    # trained at 80% clean, used at 80% clean: nothing to correct
    same = prior_correction(_OneTokenEach(), _rows(80, 20), ANSWER_NONE, use_deviation_rate=0.2)
    assert same["no_findings_bias"] == pytest.approx(0.0, abs=1e-9)
    # used where findings are commoner than in training: the bias turns negative
    assert prior_correction(_OneTokenEach(), _rows(90, 10), ANSWER_NONE, 0.5)[
        "no_findings_bias"] < 0


def test_no_bias_when_the_answer_is_not_one_token_or_a_prior_is_degenerate():
    not_one = prior_correction(_OneTokenEach(), _rows(5, 5), "no findings", 0.02)
    assert not not_one["applied"] and "2 tokens" in not_one["why"]
    all_clean = prior_correction(_OneTokenEach(), _rows(10, 0), ANSWER_NONE, 0.02)
    assert not all_clean["applied"]
    with pytest.raises(ValueError, match="no training rows"):
        none_share([], ANSWER_NONE)


def test_a_saved_bias_steers_every_later_generation(tmp_path):
    """The bias lives in generation_config.json: LocalGenerator (the generate task, the server)
    loading the saved folder answers with the biased token first."""
    torch.set_num_threads(1)
    build_embedded_base_model(tmp_path / "base", TINY)
    model, tokenizer = load_base_model(tmp_path / "base")
    chat = [[{"role": "user", "content": "Audit this record."}]]
    plain = LocalGenerator(tmp_path / "base").generate(chat, DecodingSettings(max_new_tokens=3))
    target = tokenizer.encode("batch", add_special_tokens=False)[0]
    piece = tokenizer.decode([target])
    assert piece.strip() and not plain[0].text.startswith(piece)
    apply_correction(model, {"applied": True, "token_id": target, "no_findings_bias": 1e4})
    model.save_pretrained(tmp_path / "biased")
    tokenizer.save_pretrained(tmp_path / "biased")
    biased = LocalGenerator(tmp_path / "biased").generate(chat, DecodingSettings(max_new_tokens=3))
    assert biased[0].text.startswith(piece)
    apply_correction(model, {"applied": False})  # not applied: the config is left alone
    assert model.generation_config.sequence_bias == [[[target], 1e4]]
