"""Tiny models built locally for the tests (no weights are ever downloaded)."""

from __future__ import annotations

import importlib
import os
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_spes import ModelAdapter, register_model_adapter


def require(module: str) -> object:
    r"""Import an optional test dependency; skip for users, but fail in CI where it must be installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f'{module} must be installed in CI (pip install "captum-spes[models,test]").')
        pytest.skip(f"{module} is not installed")


class WordTokenizer:
    """Token id ``i`` decodes to the word ``" w<i>"``, so every token is one word; ids 98
    and 99 (the tiny Whisper's start and end tokens) are special."""

    special = {98, 99}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(f" w{i}" for i in ids if not (skip_special_tokens and i in self.special))

    def batch_decode(self, sequences: Tensor, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s.tolist(), skip_special_tokens).strip() for s in sequences]


def tiny_whisper(seed: int = 0, max_new_tokens: int = 6, vocab_size: int = 100, input_frames: int = 300) -> nn.Module:
    """A randomly initialised Whisper small enough for unit tests.

    Real Whisper pads to 3000 frames; this one pads to ``input_frames`` (default 300) so the
    tests stay fast while exercising the same padding logic.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=input_frames // 2,
        max_target_positions=64,
        pad_token_id=vocab_size - 1,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
        decoder_start_token_id=vocab_size - 2,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config.max_new_tokens = max_new_tokens
    model.generation_config.suppress_tokens = [vocab_size - 2]  # never the start token again
    # A random model may end at once; forbid the end token first so there is something to explain.
    model.generation_config.begin_suppress_tokens = [vocab_size - 1]
    return model


def bert_decoder_config(vocab_size: int = 40) -> Any:
    """A one-layer BERT decoder with cross-attention, for ``SpeechEncoderDecoderModel``."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        is_decoder=True,
        add_cross_attention=True,
    )


def tiny_wav2vec2_bert() -> nn.Module:
    """A random ``SpeechEncoderDecoderModel``: a wav2vec 2.0 encoder (raw samples) and a BERT decoder."""
    from transformers import SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel, Wav2Vec2Config

    encoder = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
    )
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder, bert_decoder_config())
    torch.manual_seed(0)
    model = SpeechEncoderDecoderModel(config).eval()
    for settings in (model.config, model.generation_config):
        settings.decoder_start_token_id = 1
        settings.eos_token_id = 2
        settings.pad_token_id = 0
    return model


def whisper_features(num_frames: int = 120, seed: int = 0, input_frames: int = 300) -> Tensor:
    """Whisper-like features ``(1, 80, input_frames)``: random speech then the padding floor."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.full((1, 80, input_frames), -0.6)
    speech = torch.rand(1, 80, num_frames, generator=generator) * 1.2 - 0.4
    features[..., :num_frames] = speech
    # Whisper's scaling puts zero-padded audio at max - 2.
    features[..., num_frames:] = features.max() - 2.0
    return features


# ----- known-answer toy model ----------------------------------------------------------

#: token k (k = 0, 1, 2) is predicted from region REGIONS[k] = (mel slice, frame slice)
REGIONS = [(slice(0, 2), slice(0, 5)), (slice(3, 6), slice(8, 13)), (slice(6, 8), slice(15, 20))]
TOY_START, TOY_EOS, TOY_VOCAB = 4, 5, 6


class _ToyEncoder(nn.Module):
    def forward(self, input_features: Tensor, **_: Any) -> tuple[Tensor]:
        means = [input_features[:, mels, frames].mean(dim=(1, 2)) for mels, frames in REGIONS]
        return (torch.stack(means, dim=1)[:, None, :],)  # (batch, 1, 3)


class _ToyDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(TOY_VOCAB, 4)
        with torch.no_grad():
            self.embed_tokens.weight.copy_(
                torch.arange(TOY_VOCAB * 4, dtype=torch.float).reshape(TOY_VOCAB, 4) / 10 + 0.1
            )

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens


class ToySpeechModel(nn.Module):
    """Row k < 3 depends only on the mean of spectrogram region ``REGIONS[k]``; the end
    token's row depends only on the embedding of decoder input 1 (the first hypothesis
    token). So SPES must localise each token in its region and credit the end token to
    column 1."""

    main_input_name = "input_features"

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _ToyEncoder()
        self.decoder = _ToyDecoder()
        self.config = SimpleNamespace(decoder_start_token_id=TOY_START, eos_token_id=TOY_EOS, pad_token_id=None)
        self.generation_config = None
        self.direction = nn.Parameter(torch.ones(4) / 4, requires_grad=False)
        self.eval()  # an inference-only model; SPES refuses models left in training mode

    def get_encoder(self) -> nn.Module:
        return self.encoder

    def get_decoder(self) -> nn.Module:
        return self.decoder

    def forward(
        self,
        input_features: Tensor | None = None,
        encoder_outputs: Any | None = None,
        decoder_input_ids: Tensor | None = None,
        **_: Any,
    ) -> SimpleNamespace:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_features)
        regions = encoder_outputs[0][:, 0, :]  # (batch, 3)
        embeddings = self.decoder.embed_tokens(decoder_input_ids)  # (batch, L, 4)
        batch, length = decoder_input_ids.shape
        logits = regions.new_zeros(batch, length, TOY_VOCAB)
        for position in range(length):
            if position < 3:
                logits[:, position, position] = 4.0 * regions[:, position]
            else:
                first = embeddings[:, 1] @ self.direction if length > 1 else regions.new_zeros(batch)
                logits[:, position, TOY_EOS] = 2.0 + 3.0 * first
        return SimpleNamespace(logits=logits)

    def generate(self, input_features: Tensor, **_: Any) -> Tensor:
        ids = torch.full((input_features.shape[0], 1), TOY_START, device=input_features.device)
        for _step in range(4):
            logits = self.forward(input_features, decoder_input_ids=ids).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        return ids


register_model_adapter(ToySpeechModel, ModelAdapter)


def toy_features() -> Tensor:
    """``(1, 8, 20)``: 1 inside the three regions, 0 elsewhere."""
    features = torch.zeros(1, 8, 20)
    for mels, frames in REGIONS:
        features[0, mels, frames] = 1.0
    return features
