"""Waveform models: the STFT-domain layout, a known-answer toy, Moonshine and wav2vec 2.0 encoders."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from helpers import ToySpeechModel, bert_decoder_config, tiny_wav2vec2_bert
from torch import Tensor, nn

from captum_spes import SPES, SpeechSeq2SeqWrapper, TimeMasks, register_model_adapter
from captum_spes.adapters import (
    MoonshineAdapter,
    SpeechEncoderDecoderAdapter,
    STFTLayout,
    WaveformAdapter,
    get_model_adapter,
)
from captum_spes.adapters.waveform import STFT_SILENCE
from captum_spes.masks import SLICMasks

SR = 16000

# ----- the layout --------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1600, 16001, 48000])
def test_stft_round_trip_reproduces_the_waveform(num_samples):
    waveform = torch.randn(1, num_samples, generator=torch.Generator().manual_seed(num_samples)) * 0.1
    layout = STFTLayout(waveform)
    canonical = layout.to_canonical(waveform)
    assert canonical.shape == (201, 1 + num_samples // 160)
    back = layout.from_canonical(canonical[None])
    assert back.shape == (1, num_samples)
    # float32 rounding of stft -> log -> exp -> istft: about 1e-7 for a waveform of std 0.1
    assert float((back - waveform).abs().max()) < 1e-6


def test_stft_round_trip_on_a_bundled_recording():
    from captum_spes.data import load_sample

    waveform = torch.from_numpy(load_sample("librivox_0880").waveform)[None]
    layout = STFTLayout(waveform)
    back = layout.from_canonical(layout.to_canonical(waveform)[None])
    assert float((back - waveform).abs().max()) < 1e-5 * float(waveform.abs().max())


def test_stft_layout_axes_are_seconds_and_hz():
    layout = STFTLayout(torch.zeros(1, 8000))
    assert layout.n_fft == 400 and layout.hop_length == 160 and layout.frame_rate == 100.0
    hz = layout.frequencies_hz
    assert hz.shape == (201,) and float(hz[1]) == 40.0 and float(hz[-1]) == 8000.0
    assert layout.num_frames == 51
    # a zero magnitude is the floor value: silence resynthesises to zeros
    silent = layout.from_canonical(torch.full((1, 201, 51), STFT_SILENCE))
    assert float(silent.abs().max()) == 0.0


def test_stft_layout_bad_options():
    with pytest.raises(ValueError, match="hop_seconds"):
        STFTLayout(torch.zeros(1, 8000), hop_seconds=0.05)
    with pytest.raises(ValueError, match="fewer than half an STFT window"):
        STFTLayout(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="inputs must have shape"):
        STFTLayout(torch.zeros(1, 80, 100))
    with pytest.raises(ValueError, match="view must be one of"):
        WaveformAdapter(ToyWaveformModel(), view="mel")


# ----- known answer: tokens driven by the energy of time-frequency regions ----------------

#: token k depends on the mean STFT magnitude in WAVE_REGIONS[k] = ((low Hz, high Hz), (start s, end s))
WAVE_REGIONS = [((1000, 2000), (0.05, 0.15)), ((3000, 4000), (0.25, 0.35)), ((5500, 6500), (0.45, 0.55))]
TONES_HZ = (1500.0, 3500.0, 6000.0)


class _BandEnergyEncoder(nn.Module):
    """Mean STFT magnitude of each region, on an analysis grid unlike SPES's (32 ms / 8 ms)."""

    n_fft, hop = 512, 128

    def forward(self, input_values: Tensor, **_: Any) -> tuple[Tensor]:
        window = torch.hann_window(self.n_fft, device=input_values.device)
        magnitude = torch.stft(input_values, self.n_fft, self.hop, window=window, return_complex=True).abs()
        hz = torch.fft.rfftfreq(self.n_fft, 1.0 / SR)
        seconds = torch.arange(magnitude.shape[-1]) * self.hop / SR
        means = []
        for (low, high), (start, end) in WAVE_REGIONS:
            rows = (hz >= low) & (hz < high)
            cols = (seconds >= start) & (seconds < end)
            means.append(magnitude[:, rows][:, :, cols].mean(dim=(1, 2)))
        return (torch.stack(means, dim=1)[:, None, :],)  # (batch, 1, 3)


class ToyWaveformModel(ToySpeechModel):
    """:class:`ToySpeechModel` reading a waveform: row k < 3 depends only on the energy of
    ``WAVE_REGIONS[k]``, measured by the model's own STFT."""

    main_input_name = "input_values"

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _BandEnergyEncoder()
        self.eval()

    def forward(self, input_values: Tensor | None = None, encoder_outputs: Any = None, **kwargs: Any) -> Any:
        return super().forward(input_features=input_values, encoder_outputs=encoder_outputs, **kwargs)

    def generate(self, input_values: Tensor, **kwargs: Any) -> Tensor:
        return super().generate(input_values)


register_model_adapter(ToyWaveformModel, WaveformAdapter)


def tone_bursts(seconds: float = 0.6) -> Tensor:
    """``(1, samples)``: one tone burst inside each region, over faint noise."""
    t = torch.arange(int(seconds * SR)) / SR
    waveform = 0.001 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))
    for tone, (_, (start, end)) in zip(TONES_HZ, WAVE_REGIONS):
        waveform += 0.1 * torch.sin(2 * math.pi * tone * t) * ((t >= start) & (t < end))
    return waveform[None]


def _grid_mask(rows: int, frames: int, bins_per_block: int = 20, frames_per_block: int = 5) -> Tensor:
    r = torch.arange(rows)[:, None] // bins_per_block
    c = torch.arange(frames)[None, :] // frames_per_block
    return r * (frames // frames_per_block + 1) + c


def _inside(layout: STFTLayout, band: tuple[float, float], span: tuple[float, float], margin_s: float) -> Tensor:
    hz = layout.frequencies_hz
    seconds = torch.arange(layout.num_frames) / layout.frame_rate
    rows = (hz >= band[0] - 200) & (hz < band[1] + 200)
    cols = (seconds >= span[0] - margin_s) & (seconds < span[1] + margin_s)
    return rows[:, None] & cols[None, :]


def assert_localises_in_regions(result: Any, layout: STFTLayout, top: int = 50) -> None:
    for k, (band, span) in enumerate(WAVE_REGIONS):
        saliency = result.spectrogram_attr[k]
        inside = _inside(layout, band, span, margin_s=0.03)
        highest = saliency.flatten().topk(top).indices
        assert bool(inside.flatten()[highest].all()), f"token {k}: top elements outside its region"
        # Elements outside share the mean impact of all masks (the conditional-mean estimator):
        # the region's peak must stand clear of their spread.
        outside = saliency[~inside]
        assert float(saliency.max() - outside.median()) > 5 * float(outside.std()), f"token {k}: not localised"


def test_toy_waveform_tokens_localise_in_their_time_frequency_regions():
    waveform = tone_bursts()
    layout = STFTLayout(waveform)
    model = ToyWaveformModel()
    assert isinstance(get_model_adapter(model), WaveformAdapter)
    labels = _grid_mask(201, layout.num_frames)
    result = SPES(SpeechSeq2SeqWrapper(model)).attribute(waveform, n_masks=300, feature_mask=labels, token_p=None)
    assert result.target_ids == [0, 1, 2, 5]
    assert result.spectrogram_attr.shape == (4, 201, layout.num_frames)
    assert result.metadata["frame_rate"] == 100.0
    assert_localises_in_regions(result, layout)


@pytest.mark.parametrize("defect", ["frequencies_upside_down", "ignores_the_mask"])
def test_toy_waveform_known_answer_catches_a_broken_layout(defect, monkeypatch):
    clean_resynthesis = STFTLayout.from_canonical

    def broken(self: STFTLayout, canonical: Tensor) -> Tensor:
        if defect == "frequencies_upside_down":
            return clean_resynthesis(self, canonical.flip(1))
        # resynthesises the clean spectrum whatever the masks did
        return clean_resynthesis(self, self.to_canonical(self._clean)[None].expand_as(canonical))

    waveform = tone_bursts()
    monkeypatch.setattr(STFTLayout, "from_canonical", broken)
    monkeypatch.setattr(STFTLayout, "_clean", waveform, raising=False)
    layout = STFTLayout(waveform)
    result = SPES(SpeechSeq2SeqWrapper(ToyWaveformModel())).attribute(
        waveform, n_masks=300, feature_mask=_grid_mask(201, layout.num_frames), token_p=None
    )
    with pytest.raises(AssertionError):
        assert_localises_in_regions(result, layout)


# ----- tiny random Moonshine and wav2vec 2.0 encoder-decoders ------------------------------


def tiny_moonshine(vocab_size: int = 40) -> nn.Module:
    from transformers import MoonshineConfig, MoonshineForConditionalGeneration

    config = MoonshineConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        encoder_num_hidden_layers=1,
        decoder_num_hidden_layers=1,
        encoder_num_attention_heads=2,
        decoder_num_attention_heads=2,
        max_position_embeddings=64,
        decoder_start_token_id=1,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = MoonshineForConditionalGeneration(config).eval()
    model.generation_config.max_new_tokens = 4
    model.generation_config.suppress_tokens = [1]  # never the start token again
    model.generation_config.begin_suppress_tokens = [2]
    return model


def _attribute_batched(model: nn.Module, waveform: Tensor, adapter: WaveformAdapter | None = None, **kwargs: Any):
    """Results must not depend on perturbations_per_eval."""
    results = [
        SPES(SpeechSeq2SeqWrapper(model, adapter=adapter)).attribute(waveform, perturbations_per_eval=n, **kwargs)
        for n in (1, 4)
    ]
    torch.testing.assert_close(results[0].spectrogram_attr, results[1].spectrogram_attr, rtol=1e-4, atol=1e-6)
    return results[0]


@pytest.mark.parametrize("factory", [tiny_moonshine, tiny_wav2vec2_bert])
def test_waveform_models_explained_in_the_stft_domain_by_default(factory):
    model = factory()
    adapter = get_model_adapter(model)
    assert isinstance(adapter, WaveformAdapter) and adapter.view == "stft"
    assert isinstance(adapter.default_mask_family(), SLICMasks)
    waveform = torch.randn(1, 4000, generator=torch.Generator().manual_seed(1)) * 0.1
    result = _attribute_batched(model, waveform, n_masks=6, target=[5, 6], prompt_ids=[1])
    assert result.spectrogram_attr.shape == (3, 201, 26)  # (tokens, Hz bins, 10 ms frames)
    assert result.metadata["frame_rate"] == 100.0 and result.metadata["num_frames"] == 26
    assert torch.isfinite(result.spectrogram_attr).all() and result.spectrogram_attr.abs().sum() > 0
    assert result.token_attr.shape == (3, 3)


@pytest.mark.parametrize("factory", [tiny_moonshine, tiny_wav2vec2_bert])
def test_waveform_models_one_row_view_by_explicit_option(factory):
    model = factory()
    adapter = (SpeechEncoderDecoderAdapter if factory is tiny_wav2vec2_bert else MoonshineAdapter)(
        model, view="samples"
    )
    assert adapter.default_mask_family().config() == TimeMasks(frames_per_segment=320).config()
    waveform = torch.randn(1, 1600, generator=torch.Generator().manual_seed(2)) * 0.1
    result = _attribute_batched(model, waveform, adapter, n_masks=6, target=[5, 6], feature_mask=TimeMasks(160))
    assert result.spectrogram_attr.shape == (3, 1, 1600)
    assert result.metadata["frame_rate"] == 16000.0


def test_moonshine_generates_and_teacher_forcing_agrees():
    model = tiny_moonshine()
    wrapper = SpeechSeq2SeqWrapper(model)
    waveform = torch.randn(1, 4000, generator=torch.Generator().manual_seed(3)) * 0.1
    hypothesis = wrapper.set_hypothesis(waveform)
    assert hypothesis.prompt_ids == [1] and len(hypothesis.token_ids) >= 1
    with torch.no_grad():
        log_probs = wrapper(waveform)[0]
    # generate's logit processors: token 1 is always suppressed, the end token 2 at the first step
    log_probs[:, 1] = -math.inf
    log_probs[0, 2] = -math.inf
    greedy = log_probs.argmax(-1).tolist()
    assert greedy[: len(hypothesis.token_ids)] == hypothesis.token_ids


def test_waveform_floor_baseline_is_silence():
    model = tiny_moonshine()
    waveform = torch.randn(1, 4000, generator=torch.Generator().manual_seed(4)) * 0.1
    result = SPES(SpeechSeq2SeqWrapper(model)).attribute(
        waveform, n_masks=3, target=[5], baselines="floor", token_p=None, feature_mask="time"
    )
    assert result.metadata["baseline"] == {"kind": "floor", "value": pytest.approx(STFT_SILENCE)}


def test_speech_encoder_decoder_log_mel_encoders_keep_their_layout():
    from transformers import Speech2TextConfig, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

    encoder = Speech2TextConfig(
        d_model=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        conv_channels=16,
        input_feat_per_channel=20,
        max_source_positions=100,
    )
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder, bert_decoder_config())
    model = SpeechEncoderDecoderModel(config)
    adapter = SpeechEncoderDecoderAdapter(model.eval())
    assert not adapter.reads_waveform and adapter.layout == "time_first" and adapter.frame_rate == 100.0
    assert isinstance(adapter.default_mask_family(), SLICMasks)
    assert adapter.utterance_layout(torch.zeros(1, 40, 20)).name == "time_first"


class _WaveformProcessor:
    """Moonshine's feature extractor (raw samples, no normalisation) and the word tokenizer."""

    def __init__(self) -> None:
        from helpers import WordTokenizer
        from transformers import Wav2Vec2FeatureExtractor

        self.feature_extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, do_normalize=False)
        self.tokenizer = WordTokenizer()

    def __call__(self, audio: Any, **kwargs: Any) -> Any:
        return self.feature_extractor(audio, **kwargs)


@pytest.mark.parametrize("factory", [tiny_moonshine, tiny_wav2vec2_bert], ids=lambda f: f.__name__)
def test_cli_explains_a_tiny_waveform_model_in_the_stft_domain(tmp_path, monkeypatch, capsys, factory):
    import soundfile as sf

    from captum_spes import SPESResult, cli

    monkeypatch.setitem(cli.MODEL_FACTORIES, "tiny-waveform", lambda device: (factory().eval(), _WaveformProcessor()))
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone_bursts()[0].numpy(), SR)
    out = tmp_path / "out"
    args = ["explain", str(clip), "--model", "tiny-waveform", "--n-masks", "4", "--batch-size", "2", "--out", str(out)]
    assert cli.main(args) == 0, capsys.readouterr().err
    result = SPESResult.load(out / "explanation.safetensors")
    assert result.spectrogram_attr.shape[1:] == (201, 61) and result.frame_rate == 100.0
    assert (out / "report.html").is_file() and (out / "overview.png").is_file()
