"""SPES end to end: known answers, shapes, causality, batching invariance, errors."""

import io
from contextlib import redirect_stderr

import pytest
import torch
from helpers import REGIONS, ToySpeechModel, tiny_wav2vec2_bert, tiny_whisper, toy_features, whisper_features

from captum_spes import SPES, CustomMasks, InputError, SLICMasks, SpeechSeq2SeqWrapper, TimeMasks


def _spes_test_assert(model, features, expected_spec=None, **kwargs):
    """Run SPES for several perturbations_per_eval; results must not depend on it."""
    results = []
    for per_eval in (1, 3, 8):
        wrapper = SpeechSeq2SeqWrapper(model)
        results.append(SPES(wrapper).attribute(features, perturbations_per_eval=per_eval, **kwargs))
    first = results[0]
    for other in results[1:]:
        torch.testing.assert_close(other.spectrogram_attr, first.spectrogram_attr, rtol=1e-4, atol=1e-6)
        if first.token_attr is not None:
            torch.testing.assert_close(other.token_attr, first.token_attr, rtol=1e-4, atol=1e-6)
        assert other.target_ids == first.target_ids
    if expected_spec is not None:
        torch.testing.assert_close(first.spectrogram_attr, expected_spec)
    return first


@pytest.fixture(scope="module")
def whisper():
    return tiny_whisper()


# ----- known answers -------------------------------------------------------------------


@pytest.mark.parametrize("feature_mask", [None, "element"])
def test_toy_tokens_localise_in_their_regions(feature_mask):
    result = _spes_test_assert(ToySpeechModel(), toy_features(), n_masks=600, feature_mask=feature_mask)
    assert result.target_ids == [0, 1, 2, 5]
    for k, (mels, frames) in enumerate(REGIONS):
        inside = torch.zeros(8, 20, dtype=torch.bool)
        inside[mels, frames] = True
        size = min(int(inside.sum()), 10)
        top = result.spectrogram_attr[k].flatten().topk(size).indices
        assert inside.flatten()[top].all(), f"token {k}: top elements outside its region"


def test_toy_time_masks_localise_in_time():
    result = _spes_test_assert(ToySpeechModel(), toy_features(), n_masks=400, feature_mask="time")
    profile = result.time_profile()
    for k, (_, frames) in enumerate(REGIONS):
        assert frames.start <= int(profile[k].argmax()) < frames.stop


def test_toy_end_token_credits_its_context_token():
    result = _spes_test_assert(ToySpeechModel(), toy_features(), n_masks=400, token_p=0.5)
    # The end token depends only on decoder input 1; the other rows on no token at all.
    assert int(result.token_attr[3].argmax()) == 1
    assert result.token_attr[:3].abs().max() == 0


def test_toy_joint_token_masks_also_credit_context_token():
    result = _spes_test_assert(ToySpeechModel(), toy_features(), n_masks=800, token_masks="joint")
    assert int(result.token_attr[3].argmax()) == 1


def test_toy_prob_drop_is_signed_and_localises():
    result = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), n_masks=600, impact="prob_drop", feature_mask="element", token_p=None
    )
    mels, frames = REGIONS[0]
    assert result.spectrogram_attr[0][mels, frames].mean() > result.spectrogram_attr[0].mean()


# ----- whisper: shapes, padding, metadata ----------------------------------------------


def test_whisper_shapes_and_padding(whisper):
    features = whisper_features(num_frames=96)
    result = _spes_test_assert(whisper, features, n_masks=24)
    num_tokens = len(result.target_ids)
    assert num_tokens == len(result.tokens) >= 2
    assert result.spectrogram_attr.shape == (num_tokens, 80, 96)
    assert result.token_attr.shape == (num_tokens, len(result.decoder_input_ids))
    assert result.num_prompt == 1 and result.decoder_input_ids[0] == 98
    assert result.target_ids[-1] == 99
    assert torch.isfinite(result.spectrogram_attr).all()
    assert result.metadata["num_frames"] == 96 and result.metadata["input_frames"] == 300
    assert result.to_input_layout().shape == (num_tokens, 80, 300)
    assert result.to_input_layout()[..., 96:].abs().sum() == 0


def test_whisper_token_map_is_causal(whisper):
    result = SPES(SpeechSeq2SeqWrapper(whisper)).attribute(whisper_features(), n_masks=12)
    upper = ~result.token_valid_mask()
    assert result.token_attr[upper].abs().sum() == 0
    assert result.token_attr[result.token_valid_mask()].abs().sum() > 0


def test_exact_mask_count_and_metadata(whisper):
    result = SPES(SpeechSeq2SeqWrapper(whisper)).attribute(
        whisper_features(), n_masks=20, token_p=None, show_progress=False, estimator="reference"
    )
    meta = result.metadata
    assert meta["masks_per_level"] == [7, 7, 6] and meta["n_masks"] == 20
    assert meta["forward_passes"] == 21
    assert len(meta["segments_obtained"]) == 3 and all(n > 0 for n in meta["segments_obtained"])
    # 120 frames: 2000/2500/3000 per 500 frames
    assert meta["segments_requested"] == [480, 600, 720]
    assert meta["seed"] == 0 and meta["impact"] == "kl" and meta["baseline"]["kind"] == "channel_mean"
    for package in ("torch", "captum", "transformers", "captum-spes"):
        assert package in meta["versions"]
    assert result.token_attr is None


def test_seed_changes_masks_and_is_reproducible(whisper):
    spes = SPES(SpeechSeq2SeqWrapper(whisper))
    a = spes.attribute(whisper_features(), n_masks=40, seed=1, token_p=None)
    b = spes.attribute(whisper_features(), n_masks=40, seed=1, token_p=None)
    c = spes.attribute(whisper_features(), n_masks=40, seed=2, token_p=None)
    torch.testing.assert_close(a.spectrogram_attr, b.spectrogram_attr, rtol=0, atol=0)
    assert not torch.equal(a.spectrogram_attr, c.spectrogram_attr)


@pytest.mark.parametrize(
    "baselines",
    [None, "channel_mean", "floor", 0.0, 1, torch.zeros(1, 80, 300), torch.zeros(80, 120), torch.zeros(80, 1), (0.5,)],
)
def test_each_baseline_form(whisper, baselines):
    result = _spes_test_assert(whisper, whisper_features(), n_masks=6, baselines=baselines, token_p=None)
    assert result.spectrogram_attr.abs().sum() > 0


def test_baseline_equal_to_input_gives_zero_map(whisper):
    features = whisper_features()
    result = SPES(SpeechSeq2SeqWrapper(whisper)).attribute(features, n_masks=6, baselines=features, token_p=None)
    assert result.spectrogram_attr.abs().max() < 1e-5


@pytest.mark.parametrize(
    "feature_mask",
    [
        "slic",
        "time",
        "frequency",
        "element",
        TimeMasks([5, 10]),
        SLICMasks(n_segments=[50], sigma=0.0),
        torch.arange(120).repeat(80, 1) // 30,
        [torch.arange(80)[:, None] // 8, torch.arange(120)[None, :] // 20],
    ],
)
def test_each_mask_family(whisper, feature_mask):
    result = _spes_test_assert(whisper, whisper_features(), n_masks=8, feature_mask=feature_mask, token_p=None)
    assert result.spectrogram_attr.shape[1:] == (80, 120)
    assert result.metadata["never_occluded_elements"] < 80 * 120


def test_word_aligned_custom_masks(whisper):
    family = CustomMasks.from_intervals([(0.2, 0.5), (0.7, 1.0)], num_frames=120)
    result = SPES(SpeechSeq2SeqWrapper(whisper)).attribute(
        whisper_features(), n_masks=10, feature_mask=family, token_p=None
    )
    assert result.metadata["segments_obtained"] == [5]  # 2 words + 3 gaps
    row = result.spectrogram_attr[0, 0]
    assert torch.all(row[20:50] == row[20])  # one word = one segment = one value


def test_given_target_ids_and_text(whisper):
    spes = SPES(SpeechSeq2SeqWrapper(whisper))
    result = spes.attribute(whisper_features(), target=[5, 6, 7], n_masks=6)
    assert result.target_ids == [5, 6, 7, 99]
    assert result.decoder_input_ids == [98, 5, 6, 7]
    assert result.metadata["hypothesis_source"] == "ids"


def test_progress_bar_counts_forward_passes(whisper):
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        SPES(SpeechSeq2SeqWrapper(whisper)).attribute(
            whisper_features(), n_masks=10, show_progress=True, perturbations_per_eval=4
        )
    output = stderr.getvalue()
    assert "SPES attribution" in output and "21/21" in output  # 1 clean + 10 + 10 token passes


def test_captum_contract(whisper):
    spes = SPES(SpeechSeq2SeqWrapper(whisper))
    assert SPES.get_name() == "SPES"
    assert spes.multiplies_by_inputs and not spes.has_convergence_delta()
    assert hasattr(SPES.attribute, "__wrapped__")  # @log_usage
    with pytest.raises(NotImplementedError):
        spes.attribute_future()


@pytest.mark.parametrize("batch", [None, 1])
def test_noise_tunnel_is_refused_with_a_clear_message(whisper, batch):
    from captum.attr import NoiseTunnel

    tunnel = NoiseTunnel(SPES(SpeechSeq2SeqWrapper(whisper)))
    with pytest.raises(InputError, match="SPES does not work inside Captum's NoiseTunnel"):
        tunnel.attribute(whisper_features(), nt_samples=2, nt_samples_batch_size=batch, n_masks=3)
    # The refusal only concerns NoiseTunnel's route: a plain call still works.
    assert SPES(SpeechSeq2SeqWrapper(whisper)).attribute(whisper_features(), n_masks=3, token_p=None).n_mels == 80


def test_half_precision_is_finite():
    model = tiny_whisper().to(torch.bfloat16)
    features = whisper_features().to(torch.bfloat16)
    result = SPES(SpeechSeq2SeqWrapper(model)).attribute(features, n_masks=6)
    assert torch.isfinite(result.spectrogram_attr).all() and torch.isfinite(result.token_attr).all()
    assert result.metadata["dtype"] == "torch.bfloat16"


# ----- other architectures -------------------------------------------------------------


def test_speech2text_time_first_layout():
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    config = Speech2TextConfig(
        vocab_size=60,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        conv_channels=16,
        input_feat_per_channel=20,
        max_source_positions=100,
        max_target_positions=20,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    torch.manual_seed(0)
    model = Speech2TextForConditionalGeneration(config).eval()
    features = torch.randn(1, 40, 20)
    result = _spes_test_assert(model, features, n_masks=6, target=[7, 8, 9], feature_mask="element")
    assert result.spectrogram_attr.shape == (4, 20, 40)  # (tokens, mels, frames)
    assert result.token_attr.shape == (4, 4)


def test_speech_encoder_decoder_waveform_input():
    model = tiny_wav2vec2_bert()
    waveform = torch.randn(1, 1600)
    # waveform encoders are perturbed in the STFT domain: 201 bins of 40 Hz, 10 ms frames
    result = _spes_test_assert(model, waveform, n_masks=6, target=[5, 6], feature_mask=TimeMasks(2))
    assert result.spectrogram_attr.shape == (3, 201, 11)
    with pytest.raises(ValueError, match="inputs must have shape"):
        SPES(SpeechSeq2SeqWrapper(model)).attribute(torch.randn(1, 80, 100), n_masks=3, target=[5])


# ----- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"p": 0.0}, ValueError, "p must be a probability"),
        ({"p": 1.0}, ValueError, "p must be a probability"),
        ({"token_p": 0}, ValueError, "token_p=None to skip"),
        ({"token_p": 1.5}, ValueError, "token_p must be a probability"),
        ({"n_masks": 2}, ValueError, "smaller than the number of mask levels"),
        ({"n_masks": [3, 3]}, ValueError, "one positive int per mask level"),
        ({"perturbations_per_eval": 0}, ValueError, "perturbations_per_eval must be a positive int"),
        ({"token_masks": "both"}, ValueError, "token_masks must be one of"),
        ({"token_masks": "joint", "n_token_masks": 3}, ValueError, "n_token_masks applies"),
        ({"impact": "nope"}, ValueError, "not a registered impact measure"),
        ({"feature_mask": "nope"}, ValueError, "not a registered mask family"),
        ({"feature_mask": torch.zeros(80, 120)}, TypeError, "integer tensor"),
        ({"feature_mask": torch.zeros(7, 3, dtype=torch.long)}, ValueError, "does not broadcast"),
        ({"baselines": "silence"}, ValueError, "baselines='silence' is not known"),
        ({"baselines": torch.zeros(3, 3)}, ValueError, "does not match the input"),
        ({"num_frames": 0}, ValueError, "num_frames must be an int"),
        ({"additional_forward_args": (1,)}, ValueError, "additional_forward_args is not supported"),
        ({"seed": -1}, ValueError, "seed must be"),
    ],
)
def test_bad_arguments(whisper, kwargs, error, match):
    with pytest.raises(error, match=match):
        SPES(SpeechSeq2SeqWrapper(whisper)).attribute(whisper_features(), **{"n_masks": 6, **kwargs})


@pytest.mark.parametrize(
    "inputs, error, match",
    [
        (torch.zeros(2, 80, 300), ValueError, "one utterance per call"),
        (torch.zeros(1, 80, 300, dtype=torch.long), TypeError, "floating-point"),
        (torch.zeros(80, 300), ValueError, "inputs must have shape"),
        (torch.full((1, 80, 300), float("nan")), ValueError, "NaN or inf"),
        ((torch.zeros(1, 80, 300), torch.zeros(1, 80, 300)), ValueError, "one input tensor"),
    ],
)
def test_bad_inputs(whisper, inputs, error, match):
    with pytest.raises(error, match=match):
        SPES(SpeechSeq2SeqWrapper(whisper)).attribute(inputs, n_masks=3)


def test_empty_hypothesis_is_an_error(whisper):
    with pytest.raises(ValueError, match="hypothesis is empty"):
        SPES(SpeechSeq2SeqWrapper(whisper)).attribute(whisper_features(), target=[], n_masks=3)


def test_unsupported_model_and_forward_func():
    with pytest.raises(TypeError, match="unsupported model"):
        SpeechSeq2SeqWrapper(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="SpeechSeq2SeqWrapper"):
        SPES(lambda x: x)


def test_impact_measure_returning_nan_is_an_error(whisper):
    def broken(clean, perturbed, target_ids):
        return torch.full(perturbed.shape[:2], float("nan"))

    with pytest.raises(FloatingPointError, match="NaN or inf"):
        SPES(SpeechSeq2SeqWrapper(whisper)).attribute(whisper_features(), n_masks=3, impact=broken)


def test_the_callers_utterance_id_is_saved(whisper, tmp_path):
    result = SPES(SpeechSeq2SeqWrapper(whisper)).attribute(
        whisper_features(), n_masks=3, token_p=None, utterance_id="corpus/clip-7"
    )
    assert result.metadata["utterance_id"] == "corpus/clip-7"
    loaded = type(result).load(result.save(tmp_path / "x"))
    assert loaded.metadata["utterance_id"] == "corpus/clip-7"
    assert loaded.num_units == result.num_units
    torch.testing.assert_close(loaded.spectrogram_z, result.spectrogram_z, equal_nan=True)  # 3 masks: mostly NaN


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # 1.2 s of speech: 160 masks give 40 square SLIC cells (>= 30 per second x 1.2 s = 36);
        # 88 masks 22 (< 36), narrowed in time enough (>= 17 per second x 1.2 s = 20.4); 72
        # masks 18 (< 20.4): the reference.
        ({"n_masks": 160}, ("coarse_to_fine", 1.0)),
        ({"n_masks": 160, "feature_mask": "slic"}, ("coarse_to_fine", 1.0)),
        ({"n_masks": 88}, ("coarse_to_fine", 8.0)),
        ({"n_masks": 72}, "reference"),
        ({"n_masks": 72, "estimator": "coarse_to_fine"}, ("coarse_to_fine", 1.0)),
        ({"n_masks": [8, 8, 8]}, "reference"),
        ({"n_masks": 24, "feature_mask": "time"}, "reference"),
        ({"n_masks": 24, "token_p": 0.5, "token_masks": "joint"}, "reference"),
        ({"n_masks": 24, "estimator": "reference"}, "reference"),
    ],
)
def test_default_estimator_follows_the_design_asked_for(whisper, options, expected):
    options = {"token_p": None, **options}
    result = SPES(SpeechSeq2SeqWrapper(whisper)).attribute(whisper_features(), **options)
    design = result.metadata["estimator"]
    if isinstance(expected, tuple):
        assert (design["name"], design["time_spacing"]) == expected
    else:
        assert design["name"] == expected


def test_coarse_to_fine_refuses_per_level_counts(whisper):
    with pytest.raises(ValueError, match="pass one budget, n_masks=<int>"):
        SPES(SpeechSeq2SeqWrapper(whisper)).attribute(
            whisper_features(), n_masks=[8, 8, 8], estimator="coarse_to_fine", token_p=None
        )
