"""Decoder-only speech LLMs (Qwen2-Audio, Voxtral) on tiny random models built here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from captum_spes import SPES, SpeechSeq2SeqWrapper, cli
from captum_spes.adapters import Qwen2AudioAdapter, SpeechLLMAdapter, VoxtralAdapter, get_model_adapter

SR = 16000
WINDOW_FRAMES = 80  # the tiny encoders read 0.8 s windows (real ones: 30 s, 3000 frames)
N_MELS = 16
SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
WORDS = ["system", "user", "assistant", "You", "are", "a", "helpful", "assistant.", "Audio", "1:"]
WORDS += ["Transcribe", "the", "audio.", "[INST]", "[/INST]", "[BEGIN_AUDIO]", "he", "she", "is", "here", "now"]
VOCAB = {token: index for index, token in enumerate(SPECIALS + WORDS)}
AUDIO_ID, END_ID, TEXT_END_ID = VOCAB["<|AUDIO|>"], VOCAB["<|im_end|>"], VOCAB["<|endoftext|>"]

#: the known-answer models' outputs depend only on the mean of this (mel slice, frame slice)
REGION = (slice(4, 8), slice(20, 35))


def word_tokenizer() -> Any:
    """A word-level tokenizer over :data:`VOCAB`, with the chat's control tokens as specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[2:],
    )


def qwen2_audio_processor() -> Any:
    """Qwen2-Audio's real processor over Whisper's feature extractor (0.8 s windows) and the word tokenizer."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    features = WhisperFeatureExtractor(feature_size=N_MELS)
    features.n_samples, features.nb_max_frames = WINDOW_FRAMES * 160, WINDOW_FRAMES
    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=word_tokenizer())


def _text_config(cls: type, init: float) -> Any:
    return cls(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=256,
        eos_token_id=[END_ID, TEXT_END_ID],
        pad_token_id=TEXT_END_ID,
        bos_token_id=VOCAB["<|im_start|>"],
        initializer_range=init,
    )


def _finish(model: nn.Module) -> nn.Module:
    model.eval()
    config = model.generation_config
    config.eos_token_id, config.pad_token_id = [END_ID, TEXT_END_ID], TEXT_END_ID
    config.max_new_tokens = 4
    config.do_sample = False
    # A random model may end at once or repeat the chat's markup; keep it to answer words.
    config.suppress_tokens = [VOCAB[t] for t in SPECIALS[2:] if VOCAB[t] != END_ID]
    config.begin_suppress_tokens = [END_ID, TEXT_END_ID]
    return model


def tiny_qwen2_audio(init: float = 0.02) -> nn.Module:
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration, Qwen2Config

    audio = Qwen2AudioEncoderConfig(
        d_model=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        num_mel_bins=N_MELS,
        max_source_positions=WINDOW_FRAMES // 2,
    )
    config = Qwen2AudioConfig(
        audio_config=audio, text_config=_text_config(Qwen2Config, init), audio_token_index=AUDIO_ID
    )
    torch.manual_seed(0)
    return _finish(Qwen2AudioForConditionalGeneration(config))


def tiny_voxtral(init: float = 0.02) -> nn.Module:
    from transformers import LlamaConfig, VoxtralConfig, VoxtralEncoderConfig, VoxtralForConditionalGeneration

    audio = VoxtralEncoderConfig(
        hidden_size=16,
        intermediate_size=64,  # four 16-dim frames per placeholder, as in Voxtral (1280 -> 5120)
        num_hidden_layers=1,
        num_attention_heads=2,
        num_mel_bins=N_MELS,
        max_source_positions=WINDOW_FRAMES // 2,
    )
    config = VoxtralConfig(audio_config=audio, text_config=_text_config(LlamaConfig, init), audio_token_id=AUDIO_ID)
    torch.manual_seed(0)
    return _finish(VoxtralForConditionalGeneration(config))


def voxtral_context(num_audio_tokens: int = 10) -> list[int]:
    """``[INST] [BEGIN_AUDIO] <audio> ... Transcribe the audio. [/INST]`` as ids."""
    words = ["[INST]", "[BEGIN_AUDIO]"] + ["<|AUDIO|>"] * num_audio_tokens + ["Transcribe", "the", "audio.", "[/INST]"]
    return [VOCAB[w] for w in words]


def speech(seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def qwen2_inputs(adapter: Qwen2AudioAdapter, seconds: float = 0.6) -> Tensor:
    return adapter.prepare_inputs(qwen2_audio_processor(), speech(seconds), SR)


def voxtral_inputs(adapter: VoxtralAdapter, seconds: float = 0.6) -> Tensor:
    """Whisper features of a 0.8 s window (Voxtral's feature extractor is Whisper's) and the chat."""
    processor = qwen2_audio_processor()
    features = processor.feature_extractor(speech(seconds), sampling_rate=SR, return_tensors="pt").input_features
    adapter.set_context(voxtral_context(adapter.num_audio_tokens()))
    return features


FAMILIES = {
    "qwen2_audio": (tiny_qwen2_audio, Qwen2AudioAdapter, qwen2_inputs),
    "voxtral": (tiny_voxtral, VoxtralAdapter, voxtral_inputs),
}


def _family(name: str, **model_kwargs: Any) -> tuple[nn.Module, SpeechLLMAdapter, Tensor]:
    build, adapter_class, inputs = FAMILIES[name]
    model = build(**model_kwargs)
    adapter = get_model_adapter(model)
    assert type(adapter) is adapter_class
    return model, adapter, inputs(adapter)


# ----- the chat context ----------------------------------------------------------------


def test_context_is_split_at_the_audio():
    model, adapter, _ = _family("qwen2_audio")
    # hidden: <|im_start|> system ... <|audio_bos|> <|AUDIO|> x15
    # visible: <|audio_eos|> Transcribe the audio. <|im_end|> <|im_start|> assistant
    # (0.6 s: 60 frames, 30 after the strided convolution, 15 after pooling)
    assert adapter.hidden_ids[-1] == AUDIO_ID and adapter.hidden_ids.count(AUDIO_ID) == 15
    visible = [VOCAB[t] for t in ["<|audio_eos|>", "Transcribe", "the", "audio.", "<|im_end|>", "<|im_start|>"]]
    assert adapter.default_prompt_ids(torch.zeros(1), {}) == visible + [VOCAB["assistant"]]

    hidden_prompt = Qwen2AudioAdapter(model, adapter.context_ids, prompt_in_token_map=False, **adapter._audio_inputs)
    assert hidden_prompt.default_prompt_ids(torch.zeros(1), {}) == [VOCAB["assistant"]]
    assert hidden_prompt.context_ids == adapter.context_ids


def test_context_errors_name_the_fix():
    model, adapter, _ = _family("voxtral")
    fresh = VoxtralAdapter(model)
    with pytest.raises(RuntimeError, match="has no chat context: call adapter.set_context"):
        fresh.generate(torch.zeros(1, N_MELS, WINDOW_FRAMES))
    with pytest.raises(ValueError, match="holds 3 audio placeholders .* fills 10"):
        fresh.set_context(voxtral_context(3))
    with pytest.raises(ValueError, match="ends with the audio"):
        fresh.set_context(voxtral_context()[:-4])
    with pytest.raises(ValueError, match="one contiguous run"):
        fresh.set_context(voxtral_context(5)[:-4] + [VOCAB["the"]] + voxtral_context(5)[2:])
    with pytest.raises(ValueError, match="takes no \\['feature_attention_mask'\\]"):
        fresh.set_context(voxtral_context(), feature_attention_mask=torch.ones(1, WINDOW_FRAMES))
    with pytest.raises(ValueError, match="mistral-common"):
        fresh.prepare_inputs(qwen2_audio_processor(), speech(), SR)
    with pytest.raises(TypeError, match="prompt_in_token_map must be a bool"):
        VoxtralAdapter(model, prompt_in_token_map="yes")


# ----- the model calls -----------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_are_the_models_at_the_visible_positions(family):
    model, adapter, features = _family(family)
    visible = torch.tensor([adapter.default_prompt_ids(features, {}) + [VOCAB["he"], VOCAB["is"]]])
    full = torch.tensor([adapter.context_ids + [VOCAB["he"], VOCAB["is"]]])
    extra = (
        {"feature_attention_mask": adapter._audio_inputs["feature_attention_mask"]} if family == "qwen2_audio" else {}
    )
    with torch.no_grad():
        expected = model(input_ids=full, input_features=features, attention_mask=torch.ones_like(full), **extra).logits
        ours = adapter.logits(visible, model_inputs=features)
        cached = adapter.logits(visible, encoder_outputs=adapter.encode(features))
    hidden = len(adapter.hidden_ids)
    torch.testing.assert_close(ours, expected[:, hidden:])
    # the cached-audio path fills the placeholders as the model does
    torch.testing.assert_close(cached, expected[:, hidden:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_token_zeroing_spares_the_hidden_prefix(family):
    model, adapter, features = _family(family)
    wrapper = SpeechSeq2SeqWrapper(model, adapter=adapter)
    hypothesis = wrapper.set_hypothesis(features, [VOCAB["he"], VOCAB["is"]])
    seen = []
    # what the language model reads: embeddings after zeroing and after the audio is filled in
    handle = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True
    )
    keep = torch.zeros(1, len(hypothesis.decoder_input_ids))
    keep[0, 0] = 1
    try:
        with torch.no_grad():
            by_model = wrapper(features, keep)
            by_cache = wrapper.forward_from_encoder(wrapper.encode(features), keep)
    finally:
        handle.remove()
    hidden = len(adapter.hidden_ids)
    embeddings = seen[0][0]
    assert embeddings[:hidden].abs().sum(-1).gt(0).all(), "a hidden-prefix embedding was zeroed"
    assert embeddings[hidden].abs().sum() > 0 and embeddings[hidden + 1 :].abs().sum() == 0
    torch.testing.assert_close(by_model, by_cache, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generated_answer_is_explained_by_teacher_forcing(family):
    model, adapter, features = _family(family)
    wrapper = SpeechSeq2SeqWrapper(model, word_tokenizer(), adapter=adapter)
    hypothesis = wrapper.set_hypothesis(features)
    assert hypothesis.prompt_ids == adapter.default_prompt_ids(features, {})
    assert 1 <= len(hypothesis.token_ids) <= 4 and hypothesis.eos_token_id == END_ID
    with torch.no_grad():
        log_probs = wrapper(features)[0]
    # generate's logit processors: the markup is suppressed, the end tokens at the first step
    log_probs[:, model.generation_config.suppress_tokens] = -math.inf
    log_probs[0, [END_ID, TEXT_END_ID]] = -math.inf
    assert log_probs.argmax(-1).tolist()[: len(hypothesis.token_ids)] == hypothesis.token_ids
    assert hypothesis.decoder_input_tokens[0] == "<|audio_eos|>" if family == "qwen2_audio" else "Transcribe"


def test_qwen2_audio_frames_follow_the_processors_mask():
    model = tiny_qwen2_audio()
    adapter = Qwen2AudioAdapter(model)
    processor = qwen2_audio_processor()
    for seconds in (0.25, 0.6, 1.0):
        features = adapter.prepare_inputs(processor, speech(seconds), SR)
        frames = int(adapter._audio_inputs["feature_attention_mask"].sum())
        assert adapter.speech_frames(features) == frames == adapter.frames_for_samples(int(seconds * SR))


def test_voxtral_frames_are_detected_from_the_padding():
    model, adapter, features = _family("voxtral")
    assert abs(adapter.speech_frames(features) - adapter.frames_for_samples(int(0.6 * SR))) <= 2
    assert adapter.frames_for_samples(10 * SR) == WINDOW_FRAMES


# ----- end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("prompt_in_token_map", [True, False])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_spes_explains_the_answer_not_the_placeholders(family, prompt_in_token_map):
    model, adapter, features = _family(family)
    adapter.prompt_in_token_map = prompt_in_token_map
    adapter.set_context(adapter.context_ids, **adapter._audio_inputs)
    results = [
        SPES(SpeechSeq2SeqWrapper(model, word_tokenizer(), adapter=adapter)).attribute(
            features, n_masks=6, perturbations_per_eval=per_eval
        )
        for per_eval in (1, 4)
    ]
    first = results[0]
    # The tiny random model's spectrogram impacts are about 3e-7, at float32's resolution of a
    # KL: batch composition changes them by rounding (1.6e-7 seen on one CPU), so only gross
    # differences are caught here; the toy known-answer tests check batch invariance of a real
    # map. The token map (about 1e-2) is compared tightly.
    torch.testing.assert_close(results[1].spectrogram_attr, first.spectrogram_attr, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results[1].token_attr, first.token_attr, rtol=1e-4, atol=1e-7)
    visible = len(adapter.default_prompt_ids(features, {}))
    assert visible == (7 if family == "qwen2_audio" else 4) if prompt_in_token_map else visible == 1
    num_tokens = first.num_tokens
    assert first.spectrogram_attr.shape == (num_tokens, N_MELS, adapter.speech_frames(features))
    assert first.token_attr.shape == (num_tokens, visible + num_tokens - 1)
    assert first.metadata["model_class"] == type(model).__name__


# ----- known answer --------------------------------------------------------------------


class RegionAudioTower(nn.Module):
    """Wraps a family's audio encoder: every output frame becomes ``offset + mean(features[REGION]) *
    direction``, so the whole answer depends on that region of the spectrogram and on nothing else of
    it (an offset, because the language model's RMS norms would cancel a mere scaling)."""

    def __init__(self, tower: nn.Module, scale: float = 4.0) -> None:
        super().__init__()
        self.tower = tower
        self.config = tower.config
        generator = torch.Generator().manual_seed(1)
        self.register_buffer("offset", torch.randn(tower.config.d_model, generator=generator))
        self.register_buffer("direction", scale * torch.randn(tower.config.d_model, generator=generator))

    @property
    def device(self) -> torch.device:
        return self.direction.device

    def _get_feat_extract_output_lengths(self, lengths: Tensor) -> Any:
        return self.tower._get_feat_extract_output_lengths(lengths)

    def forward(self, input_features: Tensor, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        shape = self.tower(input_features, **kwargs).last_hidden_state.shape
        region = input_features[:, REGION[0], REGION[1]].mean(dim=(1, 2))
        return BaseModelOutput(last_hidden_state=(self.offset + region[:, None, None] * self.direction).expand(shape))


class AudioBlindAdapter:
    """A defect to catch: the audio of the first call is reused for every perturbed pass."""

    def __init__(self, adapter: SpeechLLMAdapter) -> None:
        self.adapter = adapter
        self.clean: Tensor | None = None

    def logits(self, decoder_input_ids: Tensor, model_inputs: Tensor | None = None, encoder_outputs: Any = None):
        if model_inputs is not None:
            self.clean = model_inputs[:1] if self.clean is None else self.clean
            model_inputs = self.clean.expand_as(model_inputs)
        return type(self.adapter).logits(self.adapter, decoder_input_ids, model_inputs, encoder_outputs)


def _known_answer_model(family: str) -> tuple[nn.Module, SpeechLLMAdapter, Tensor]:
    # Weights of std 0.2: impacts of 1e-4 to 1e-2, far above float32 rounding (random tiny models
    # of std 0.02 give ~1e-7; much larger weights saturate the softmax, and the KL with it).
    model, adapter, features = _family(family, init=0.2)
    model.model.audio_tower = RegionAudioTower(model.model.audio_tower).eval()
    features = features.clone()
    features[0, REGION[0], REGION[1]] += 2.0  # the region stands out from the channel-mean baseline
    return model, adapter, features


def block_mask(frames: int) -> Tensor:
    """Segments of 4 mel bins x 5 frames; :data:`REGION` is three of them."""
    return (torch.arange(N_MELS)[:, None] // 4) * (frames // 5 + 1) + torch.arange(frames)[None, :] // 5


def assert_localises_in_region(result: Any) -> None:
    inside = torch.zeros(result.spectrogram_attr.shape[1:], dtype=torch.bool)
    inside[REGION] = True
    for k in range(result.num_tokens):
        saliency = result.spectrogram_attr[k]
        top = saliency.flatten().topk(20).indices
        assert bool(inside.flatten()[top].all()), f"token {k}: top elements outside the region"
        outside = saliency[~inside]
        assert float(saliency[inside].mean() - outside.median()) > 5 * float(outside.std()) + 1e-6


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_known_answer_the_answer_depends_on_its_region(family):
    model, adapter, features = _known_answer_model(family)
    result = SPES(SpeechSeq2SeqWrapper(model, adapter=adapter)).attribute(
        features, n_masks=200, feature_mask=block_mask(adapter.speech_frames(features)), token_p=None
    )
    assert float(result.spectrogram_attr.flatten(1).max(1).values.min()) > 1e-4  # every token reacts
    assert_localises_in_region(result)


def test_known_answer_catches_an_adapter_that_ignores_the_perturbed_audio(monkeypatch):
    model, adapter, features = _known_answer_model("qwen2_audio")
    blind = AudioBlindAdapter(adapter)
    monkeypatch.setattr(adapter, "logits", blind.logits)
    result = SPES(SpeechSeq2SeqWrapper(model, adapter=adapter)).attribute(
        features, n_masks=200, feature_mask=block_mask(adapter.speech_frames(features)), token_p=None
    )
    with pytest.raises(AssertionError):
        assert_localises_in_region(result)


# ----- command line ----------------------------------------------------------------------


def test_cli_explains_a_tiny_qwen2_audio(tmp_path: Path, monkeypatch, capsys):
    import soundfile as sf

    monkeypatch.setitem(
        cli.MODEL_FACTORIES, "tiny-qwen2-audio", lambda device: (tiny_qwen2_audio(), qwen2_audio_processor())
    )
    clip = tmp_path / "clip.wav"
    sf.write(clip, speech(0.6), SR)
    out = tmp_path / "out"
    status = cli.main(
        ["explain", str(clip), "--model", "tiny-qwen2-audio", "--n-masks", "4", "--batch-size", "2", "--out", str(out)]
    )
    assert status == 0, capsys.readouterr().err
    from captum_spes import SPESResult

    result = SPESResult.load(out / "explanation.safetensors")
    assert result.metadata["model_class"] == "Qwen2AudioForConditionalGeneration"
    assert result.spectrogram_attr.shape[1:] == (N_MELS, 60)
    assert (out / "report.html").is_file() and (out / "overview.png").is_file()
