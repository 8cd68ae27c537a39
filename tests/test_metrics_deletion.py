"""Deletion / insertion curves with hand-computed rankings, curves and AUCs."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import WordTokenizer, tiny_whisper, whisper_features

from captum_spes import SpeechSeq2SeqWrapper, SPESResult
from captum_spes.metrics import (
    corpus_wer,
    deletion_curve,
    deletion_curve_teacher_forced,
    insertion_curve,
    make_generate_decoder,
    percent_levels,
    perturbation_masks,
    ranking_map,
)

# 2 mel bins x 3 speech frames; descending order of flat indices: 0, 4, 2, 3, 5, 1.
MAP = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.7, 0.2]])
WORDS = ["a", "b", "c", "d", "e", "f"]
PAD = 7.0


def features(pad: float = PAD) -> torch.Tensor:
    """(1, 2, 5): speech frames 0-2 hold 1..6 (mel means 2 and 5), frames 3-4 padding."""
    x = torch.full((1, 2, 5), pad)
    x[0, :, :3] = torch.arange(1.0, 7.0).reshape(2, 3)
    return x


def make_decoder(seen: list[torch.Tensor]):
    """Word i of utterance 1 becomes "x" when flat speech element i was set to 0; an input with
    padding 8 is utterance 2, whose text "p q" never changes."""

    def decode(batch: torch.Tensor) -> list[str]:
        seen.append(batch.clone())
        texts = []
        for x in batch:
            if x[0, 3] == 8.0:
                texts.append("p q")
                continue
            assert torch.all(x[:, 3:] == PAD), "padding frames must never be perturbed"
            flat = x[:, :3].reshape(-1)
            texts.append(" ".join("x" if v == 0 else w for v, w in zip(flat.tolist(), WORDS)))
        return texts

    return decode


def test_levels_and_errors():
    assert percent_levels() == [float(q) for q in range(0, 101, 5)]
    assert percent_levels(step=25, max_percent=50) == [0.0, 25.0, 50.0]
    assert percent_levels(levels=[0, 10]) == [0.0, 10.0]
    with pytest.raises(ValueError, match="levels is empty"):
        percent_levels(levels=[])
    with pytest.raises(ValueError, match="step must be positive and divide"):
        percent_levels(step=7)
    with pytest.raises(ValueError, match="strictly increasing"):
        percent_levels(levels=[50, 10])
    with pytest.raises(ValueError, match="max_percent"):
        percent_levels(max_percent=120)


def test_masks_by_hand():
    masks = perturbation_masks(MAP, [0, 25, 50, 75, 100], "deletion")
    # floor(6 q / 100) = 0, 1, 3, 4, 6 top elements.
    assert masks.flatten(1).sum(1).tolist() == [0, 1, 3, 4, 6]
    assert masks[1].reshape(-1).nonzero().flatten().tolist() == [0]
    assert sorted(masks[2].reshape(-1).nonzero().flatten().tolist()) == [0, 2, 4]
    inserted = perturbation_masks(MAP, [0, 50, 100], "insertion")
    # Insertion at q keeps the top floor(6 q / 100) and replaces the rest.
    assert sorted(inserted[1].reshape(-1).nonzero().flatten().tolist()) == [1, 3, 5]
    assert inserted[0].all() and not inserted[2].any()
    # Ties are broken by flat index (lower first).
    tied = perturbation_masks(torch.zeros(2, 2), [50], "deletion")
    assert tied[0].reshape(-1).tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="mode"):
        perturbation_masks(MAP, [0], "remove")


def test_deletion_curve_known_answer():
    seen: list[torch.Tensor] = []
    curve = deletion_curve(MAP, features(), make_decoder(seen), step=25, baselines=0.0, metric="wer")
    expected = [0.0, 100 / 6, 50.0, 400 / 6, 100.0]
    assert curve.scores.tolist() == pytest.approx(expected)
    raw = 25 * (0 + 2 * 100 / 6 + 2 * 50 + 2 * 400 / 6 + 100) / 2
    assert curve.auc_raw == pytest.approx(raw) and curve.auc == pytest.approx(raw / 100)
    assert curve.direction == "higher_is_more_faithful"
    assert curve.num_replaced.tolist() == [[0, 1, 3, 4, 6]]
    assert curve.references == ["a b c d e f"]
    assert curve.hypotheses[0][1] == "x b c d e f"
    assert curve.hypotheses[0][2] == "x b x d x f"
    assert "10000" in curve.scale and curve.settings["normalize_text"] is False
    # Clean input first, then the 5 levels, in batches of at most 8.
    assert [b.shape[0] for b in seen] == [6]


def test_insertion_curve_known_answer():
    curve = insertion_curve(MAP, features(), make_decoder([]), step=25, baselines=0.0, metric="wer")
    expected = [100.0, 500 / 6, 50.0, 200 / 6, 0.0]
    assert curve.scores.tolist() == pytest.approx(expected)
    assert curve.auc_raw == pytest.approx(25 * (100 + 2 * 500 / 6 + 100 + 2 * 200 / 6) / 2)
    assert curve.direction == "lower_is_more_faithful" and curve.mode == "insertion"


def test_corpus_level_over_utterances_and_batches():
    seen: list[torch.Tensor] = []
    curve = deletion_curve(
        [MAP, MAP], [features(), features(8.0)], make_decoder(seen), step=25, baselines=0.0, metric="wer", batch_size=4
    )
    # Edits of utterance 1 over 6 + 2 reference words.
    assert curve.scores.tolist() == pytest.approx([0.0, 12.5, 37.5, 50.0, 75.0])
    assert curve.utterance_scores[1].tolist() == [0.0] * 5
    assert [b.shape[0] for b in seen] == [4, 4, 4]  # 2 clean + 10 perturbed inputs


def test_default_baseline_is_channel_mean_and_padding_kept():
    seen: list[torch.Tensor] = []
    deletion_curve(MAP, features(), make_decoder(seen), levels=[100], metric="wer")
    last = seen[0][-1]
    assert last[:, :3].tolist() == [[2.0] * 3, [5.0] * 3]
    assert torch.all(last[:, 3:] == PAD)


def test_wer_clipping_and_bleu_direction():
    def hallucinate(batch: torch.Tensor) -> list[str]:
        zeros = [(x[:, :3] == 0).sum().item() for x in batch]
        return ["a b c d e f" if z == 0 else "x " * 14 for z in zeros]

    raw = deletion_curve(MAP, features(), hallucinate, step=50, baselines=0.0, metric="wer")
    clipped = deletion_curve(MAP, features(), hallucinate, step=50, baselines=0.0)
    assert raw.scores.tolist() == pytest.approx([0.0, 1400 / 6, 1400 / 6])  # 6 subs + 8 ins
    assert clipped.metric == "wer_max" and clipped.scores.tolist() == [0.0, 100.0, 100.0]
    assert clipped.settings["wer_clipped_at_100"] is True
    assert corpus_wer(["a b"], ["A b."], normalize_text=True) == 0.0
    assert corpus_wer(["a b"], ["A b."]) == 100.0

    bleu = deletion_curve(MAP, features(), make_decoder([]), step=50, baselines=0.0, metric="bleu")
    assert bleu.scores[0] == pytest.approx(100.0) and bleu.scores[-1] == pytest.approx(0.0)
    assert bleu.scores[1] < bleu.scores[0]
    assert bleu.direction == "lower_is_more_faithful"
    assert (
        insertion_curve(MAP, features(), make_decoder([]), step=50, metric="bleu").direction
        == "higher_is_more_faithful"
    )


def test_ranking_map_sources_and_token_index():
    per_token = torch.stack([MAP, MAP.flip(1)])
    assert torch.equal(ranking_map(per_token, token_index=1, normalize=None), MAP.flip(1))
    assert torch.allclose(ranking_map(per_token, normalize=None), (MAP + MAP.flip(1)) / 2)
    result = SPESResult(
        spectrogram_attr=per_token,
        token_attr=torch.tensor([[0.5, 0.0], [0.2, 0.9]]),
        target_ids=[1, 2],
        tokens=[" a", "<eos>"],
        decoder_input_ids=[0, 1],
        decoder_input_tokens=["<s>", " a"],
        num_prompt=1,
        target_log_probs=torch.zeros(2),
    )
    assert torch.allclose(ranking_map(result), result.utterance_map())
    assert torch.allclose(ranking_map(result, token_index=0), result.normalize().spectrogram_attr[0])
    seen: list[torch.Tensor] = []
    curve = deletion_curve(
        per_token, features(), make_decoder(seen), levels=[0, 50], token_index=1, normalize=None, baselines=0.0
    )
    # The flipped map [[.5, .1, .9], [.2, .7, .3]] ranks flat indices 2, 4, 0 first.
    assert curve.hypotheses[0][1] == "x b x d x f" and curve.settings["ranking"] == "token 1"


def test_full_length_map_is_cropped_to_speech():
    full = torch.cat([MAP, torch.full((2, 2), 100.0)], dim=1)  # padding scored highest
    curve = deletion_curve(full, features(), make_decoder([]), levels=[0, 50], num_frames=3, baselines=0.0)
    assert curve.num_replaced.tolist() == [[0, 3]]


def test_errors_name_the_argument():
    decode = make_decoder([])
    with pytest.raises(ValueError, match="attribution must have shape"):
        deletion_curve(torch.zeros(1, 1, 2, 3), features(), decode)
    with pytest.raises(ValueError, match="mel bins"):
        deletion_curve(torch.zeros(3, 3), features(), decode)
    with pytest.raises(ValueError, match="frames"):
        deletion_curve(torch.zeros(2, 6), features(), decode)
    with pytest.raises(ValueError, match="covers 4 frames"):
        deletion_curve(torch.zeros(2, 4), features(), decode, num_frames=3)
    with pytest.raises(ValueError, match="baselines"):
        deletion_curve(MAP, features(), decode, baselines=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="levels is empty"):
        deletion_curve(MAP, features(), decode, levels=[])
    with pytest.raises(ValueError, match="step must"):
        deletion_curve(MAP, features(), decode, step=30)
    with pytest.raises(ValueError, match="metric"):
        deletion_curve(MAP, features(), decode, metric="cer")
    with pytest.raises(ValueError, match="features\\[0\\]"):
        deletion_curve(MAP, features()[0], decode)
    with pytest.raises(ValueError, match="same utterances"):
        deletion_curve([MAP, MAP], [features()], decode)
    with pytest.raises(ValueError, match="one str per input"):
        deletion_curve(MAP, features(), lambda b: ["a"])
    with pytest.raises(ValueError, match="NaN"):
        deletion_curve(torch.full((2, 3), math.nan), features(), decode)
    with pytest.raises(ValueError, match="every reference is empty"):
        deletion_curve(MAP, features(), lambda b: [""] * b.shape[0])


def test_tiny_whisper_integration_is_deterministic():
    model = tiny_whisper(seed=2, max_new_tokens=5)  # seed 2 decodes a non-empty text
    x = whisper_features(num_frames=40)
    attribution = torch.rand(3, 80, 40, generator=torch.Generator().manual_seed(0))
    generate = make_generate_decoder(model, WordTokenizer(), batch_size=2)

    def decode(batch: torch.Tensor) -> list[str]:
        assert torch.equal(batch[:, :, 40:], x[:, :, 40:].expand(batch.shape[0], -1, -1)), "padding changed"
        return generate(batch)

    decode.adapter = generate.adapter
    first = deletion_curve(attribution, x, decode, levels=[0, 50, 100])
    second = deletion_curve(attribution, x, decode, levels=[0, 50, 100])
    assert first.scores.shape == (3,) and first.levels.tolist() == [0.0, 50.0, 100.0]
    assert torch.equal(first.scores, second.scores) and first.hypotheses == second.hypotheses
    assert first.references[0] != "" and first.hypotheses[0][0] == first.references[0]
    assert first.scores[0] == 0.0 and 0.0 <= first.scores.min() and first.scores.max() <= 100.0
    assert first.num_replaced.tolist() == [[0, 1600, 3200]]
    assert first.settings["num_frames"] == [40]

    wrapper = SpeechSeq2SeqWrapper(model)
    wrapper.set_hypothesis(x, target=[5, 6, 7])
    tf = deletion_curve_teacher_forced(attribution, x, wrapper, levels=[0, 50, 100], batch_size=2)
    with torch.inference_mode():
        clean = wrapper.token_log_probs(x).mean().item()
    assert tf.scores.shape == (3,) and tf.scores[0].item() == pytest.approx(clean, abs=1e-5)
    assert tf.metric == "log_prob" and tf.direction == "lower_is_more_faithful"
    assert "not the paper" in tf.settings["decoding"]
    token = deletion_curve_teacher_forced(attribution, x, wrapper, levels=[0, 100], token_index=2)
    with torch.inference_mode():
        assert token.scores[0].item() == pytest.approx(wrapper.token_log_probs(x)[0, 2].item(), abs=1e-5)
