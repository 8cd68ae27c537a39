"""Size (compactness) AUC on hand-made maps."""

from __future__ import annotations

import pytest
import torch

from captum_spes import SPESResult
from captum_spes.metrics import default_token_valid, size_curve, size_thresholds
from captum_spes.normalizers import normalize_reference

# Values {0, .5, 1, .25}: percent >= t for t = 0, .25, .5, .75, 1 is 100, 75, 50, 25, 25.
SPEC = torch.tensor([[[0.0, 0.5]], [[1.0, 0.25]]])
# Valid (lower triangle) entries 0.5, 0.0, 1.0; the 9 is above the diagonal and ignored.
TOK = torch.tensor([[0.5, 9.0], [0.0, 1.0]])


def test_thresholds():
    assert size_thresholds().shape == (21,)
    assert size_thresholds(0.25).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (0.3, 0.0, -0.1, 2.0):
        with pytest.raises(ValueError, match="step must"):
            size_thresholds(bad)


def test_size_by_hand():
    out = size_curve((SPEC, TOK), step=0.25, normalize=None)
    assert out.spectrogram_curve.tolist() == [100.0, 75.0, 50.0, 25.0, 25.0]
    assert out.spectrogram_auc == pytest.approx(0.25 * (87.5 + 62.5 + 37.5 + 25.0))  # 53.125
    assert out.token_curve.tolist() == pytest.approx([100.0, 200 / 3, 200 / 3, 100 / 3, 100 / 3])
    assert out.token_auc == pytest.approx(0.25 * (250 / 3 + 200 / 3 + 50 + 100 / 3))  # 58.33
    assert out.direction == "lower_is_more_compact" and "0-100" in out.scale


def test_macro_average_over_utterances():
    flat = torch.zeros(1, 1, 2)  # curve 100, 0, 0, 0, 0 -> AUC 12.5
    out = size_curve([(SPEC, TOK), flat], step=0.25, normalize=None)
    assert out.spectrogram_per_utterance.shape == (2, 5)
    assert out.spectrogram_auc == pytest.approx((53.125 + 12.5) / 2)
    assert out.token_per_utterance.shape == (1, 5)  # only one utterance has a token map
    assert out.token_auc == pytest.approx(175 / 3)


def test_normalised_once_before_thresholds():
    generator = torch.Generator().manual_seed(0)
    spec = torch.rand(3, 4, 5, generator=generator) * 7 - 2
    tok = torch.rand(3, 4, generator=generator)
    valid = default_token_valid(tok)
    assert valid.tolist() == [[True, True, False, False], [True, True, True, False], [True, True, True, True]]
    expected = size_curve(normalize_reference(spec, tok, valid), normalize=None)
    out = size_curve((spec, tok))
    assert torch.allclose(out.spectrogram_curve, expected.spectrogram_curve)
    assert torch.allclose(out.token_curve, expected.token_curve)
    # Reference-normalised rows reach 0 and 1, so every value is >= 0 and at least one is 1.
    assert out.spectrogram_curve[0] == 100.0 and out.spectrogram_curve[-1] > 0


def test_spes_result_uses_its_causal_mask():
    result = SPESResult(
        spectrogram_attr=SPEC,
        token_attr=torch.tensor([[0.5, 0.0, 9.0], [0.0, 0.0, 1.0]]),
        target_ids=[1, 2],
        tokens=[" a", "<eos>"],
        decoder_input_ids=[7, 8, 1],
        decoder_input_tokens=["<s>", "<en>", " a"],
        num_prompt=2,
        target_log_probs=torch.zeros(2),
    )
    out = size_curve(result, step=0.25, normalize=None)
    # Valid: row 0 -> columns 0, 1; row 1 -> 0, 1, 2 (values .5, 0, 0, 0, 1).
    assert out.token_curve.tolist() == pytest.approx([100.0, 40.0, 40.0, 20.0, 20.0])
    assert out.spectrogram_auc == pytest.approx(53.125)


def test_errors():
    with pytest.raises(ValueError, match="num_tokens, n_mels, n_frames"):
        size_curve(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="token_attr must have shape"):
        size_curve((SPEC, torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="maps is empty"):
        size_curve([])
    with pytest.raises(ValueError, match="normalize"):
        size_curve(SPEC, normalize="l2")
    with pytest.raises(ValueError, match="NaN"):
        size_curve(torch.full((1, 1, 2), float("nan")))
    with pytest.raises(TypeError, match="SPESResult"):
        size_curve(["not a map"])
