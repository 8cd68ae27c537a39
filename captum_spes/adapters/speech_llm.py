#!/usr/bin/env python3
r"""Decoder-only speech LLMs: an audio encoder whose outputs fill placeholder tokens of a chat.

A speech LLM (Qwen2-Audio, Voxtral, ...) reads one token sequence: a chat template whose audio
placeholder tokens are replaced by the projected audio-encoder outputs, then the text prompt,
then the answer it generates. SPES explains the answer token by token, so the adapter splits
the chat context once per utterance (:meth:`SpeechLLMAdapter.set_context`):

* the **hidden prefix**, everything up to the last audio placeholder (system prompt, chat
  header, the hundreds of placeholders): the adapter prepends it in :meth:`logits` and
  :meth:`generate`, and it is never a column of the token map nor ever zeroed;
* the **visible prompt**, the text after the audio (the instruction and the assistant header):
  the wrapper's forced prompt (``Hypothesis.prompt_ids``), so its tokens are columns of the
  token map. With ``prompt_in_token_map=False`` only the last context token stays visible,
  because the first answer token is predicted at that position.

The answer is what :class:`~captum_spes.Hypothesis` holds; the spectrogram is the log-mel
input of the audio encoder, perturbed like Whisper's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from captum_spes.adapters.base import ModelAdapter
from captum_spes.adapters.whisper import WhisperAdapter
from captum_spes.errors import InputError, InputTypeError

__all__ = ["SpeechLLMAdapter", "Qwen2AudioAdapter", "VoxtralAdapter", "DEFAULT_INSTRUCTION"]

#: instruction used by :meth:`SpeechLLMAdapter.prepare_inputs` when none is given
DEFAULT_INSTRUCTION = "Transcribe the audio."


def _flat_ids(ids: Sequence[int] | Tensor, name: str) -> list[int]:
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    if values and isinstance(values[0], list):
        if len(values) != 1:
            raise InputError(f"{name} must hold one chat (batch 1), got {len(values)}")
        values = values[0]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(f"{name} must be a non-empty flat sequence of token ids")
    return values


class SpeechLLMAdapter(ModelAdapter):
    r"""Base class of decoder-only speech LLMs with Whisper-style ``(batch, n_mels, frames)`` input.

    A family subclass says how many placeholders the audio fills (:meth:`num_audio_tokens`),
    computes the projected audio embeddings (:meth:`encode`) and names extra audio inputs
    (:attr:`audio_input_names`). Build the chat context with the family's processor and give
    it to :meth:`set_context` (or let :meth:`prepare_inputs` do both).

    Args:
        model (nn.Module): the ``...ForConditionalGeneration`` model.
        context_ids (sequence of int or Tensor, optional): the chat with expanded audio
            placeholders, e.g. ``processor(text=..., audio=...).input_ids``; may be set later
            with :meth:`set_context`.
        prompt_in_token_map (bool, optional): the text after the audio is a column block of
            the token map (True) or hidden with the chat header (False). Default: True
        instruction (str, optional): the user turn :meth:`prepare_inputs` writes after the
            audio. Default: :data:`DEFAULT_INSTRUCTION`
        **audio_inputs (Tensor): extra inputs of the model for this utterance (the family's
            :attr:`audio_input_names`, e.g. Qwen2-Audio's ``feature_attention_mask``).
    """

    #: keyword arguments the model takes besides input ids and features (per utterance)
    audio_input_names: tuple[str, ...] = ()

    def __init__(
        self,
        model: nn.Module,
        context_ids: Sequence[int] | Tensor | None = None,
        *,
        prompt_in_token_map: bool = True,
        instruction: str = DEFAULT_INSTRUCTION,
        **audio_inputs: Tensor,
    ) -> None:
        super().__init__(model)
        if not isinstance(prompt_in_token_map, bool):
            raise InputTypeError(f"prompt_in_token_map must be a bool, got {prompt_in_token_map!r}")
        self.prompt_in_token_map = prompt_in_token_map
        self.instruction = instruction
        self._hidden_ids: list[int] | None = None
        self._prompt_ids: list[int] = []
        self._audio_inputs: dict[str, Tensor] = {}
        if context_ids is not None:
            self.set_context(context_ids, **audio_inputs)
        elif audio_inputs:
            raise InputError(f"{sorted(audio_inputs)} given without context_ids; pass both, or call set_context")

    # ----- the chat context ---------------------------------------------------------
    @property
    def audio_token_id(self) -> int:
        config = self.model.config
        value = getattr(config, "audio_token_id", None)
        if value is None:
            value = getattr(config, "audio_token_index", None)
        if not isinstance(value, int):
            raise InputError(f"{type(self.model).__name__}'s config names no audio_token_id")
        return value

    def num_audio_tokens(self) -> int:
        """Placeholders one utterance's audio fills in the chat."""
        raise NotImplementedError

    def set_context(self, context_ids: Sequence[int] | Tensor, **audio_inputs: Tensor) -> None:
        r"""Split the chat of one utterance into hidden prefix and visible prompt.

        Args:
            context_ids (sequence of int or Tensor): ``(length,)`` or ``(1, length)``, the
                chat up to the answer (``add_generation_prompt=True``), audio placeholders
                expanded as the family's processor expands them.
            **audio_inputs (Tensor): the family's :attr:`audio_input_names` for this utterance.
        """
        unknown = sorted(set(audio_inputs) - set(self.audio_input_names))
        if unknown:
            raise InputError(
                f"{type(self).__name__} takes no {unknown}; its audio inputs are {list(self.audio_input_names)}"
            )
        ids = _flat_ids(context_ids, "context_ids")
        placeholders = [i for i, token in enumerate(ids) if token == self.audio_token_id]
        previous, self._audio_inputs = self._audio_inputs, {k: v for k, v in audio_inputs.items() if v is not None}
        try:
            expected = self.num_audio_tokens()
        finally:
            # A context refused below leaves the adapter as it was.
            new_inputs, self._audio_inputs = self._audio_inputs, previous
        if len(placeholders) != expected or not placeholders:
            raise InputError(
                f"context_ids holds {len(placeholders)} audio placeholders (id {self.audio_token_id}) but this "
                f"utterance's audio fills {expected}; build the chat with the model's processor from the same audio"
            )
        last = placeholders[-1]
        if last != placeholders[0] + expected - 1:
            raise InputError("context_ids must hold one audio (one contiguous run of placeholders)")
        if last == len(ids) - 1:
            raise InputError(
                "context_ids ends with the audio: append the text prompt and the assistant header "
                "(apply_chat_template(..., add_generation_prompt=True))"
            )
        cut = last + 1 if self.prompt_in_token_map else len(ids) - 1
        self._hidden_ids, self._prompt_ids, self._audio_inputs = ids[:cut], ids[cut:], new_inputs

    @property
    def hidden_ids(self) -> list[int]:
        """The hidden prefix (chat header and audio placeholders)."""
        if self._hidden_ids is None:
            raise RuntimeError(
                f"{type(self).__name__} has no chat context: call adapter.set_context(processor_output.input_ids, "
                "...) or adapter.prepare_inputs(processor, waveform, sampling_rate) first"
            )
        return self._hidden_ids

    @property
    def context_ids(self) -> list[int]:
        """The whole chat: hidden prefix then visible prompt."""
        return self.hidden_ids + self._prompt_ids

    def prepare_inputs(self, processor: Any, waveform: Any, sampling_rate: int) -> Tensor:
        r"""Build the chat of one clip with the family's processor, set it as the context and
        return the audio features ``(1, n_mels, frames)``.

        The conversation is one user turn, the audio then :attr:`instruction`, rendered with
        the processor's chat template (``add_generation_prompt=True``).
        """
        conversation = [
            {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": self.instruction}]},
        ]
        text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, audio=waveform, sampling_rate=sampling_rate, return_tensors="pt")
        self.set_context(inputs["input_ids"], **{name: inputs[name] for name in self.audio_input_names})
        return inputs[self.input_name]

    def _audio_kwargs(self, batch: int, device: torch.device) -> dict[str, Tensor]:
        return {name: value.to(device).expand(batch, *value.shape[1:]) for name, value in self._audio_inputs.items()}

    def _with_prefix(self, decoder_input_ids: Tensor) -> Tensor:
        hidden = torch.tensor(self.hidden_ids, dtype=decoder_input_ids.dtype, device=decoder_input_ids.device)
        return torch.cat([hidden.expand(decoder_input_ids.shape[0], -1), decoder_input_ids], dim=1)

    # ----- decoding -----------------------------------------------------------------
    def generate(self, model_inputs: Tensor, **generate_kwargs: Any) -> Tensor:
        """Free decoding after the chat context; returns context and answer ``(batch, length)``."""
        batch = model_inputs.shape[0]
        ids = torch.tensor([self.context_ids], device=model_inputs.device).expand(batch, -1)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                **{self.input_name: model_inputs},
                **self._audio_kwargs(batch, model_inputs.device),
                **generate_kwargs,
            )
        return getattr(output, "sequences", output)

    def generated_hypothesis(
        self, sequence: Tensor, inputs: Tensor, generate_kwargs: dict
    ) -> tuple[list[int], list[int]]:
        ids = [int(i) for i in sequence.tolist()]
        context = self.context_ids
        if ids[: len(context)] != context:
            raise InputError("the generated sequence does not start with the chat context; was it set for this clip?")
        answer = ids[len(context) :]
        stop = set(self.end_token_ids())
        end = next((i for i, token in enumerate(answer) if token in stop), len(answer))
        return list(self._prompt_ids), answer[:end]

    def default_prompt_ids(self, inputs: Tensor, generate_kwargs: dict) -> list[int]:
        self.hidden_ids  # noqa: B018 - raises the clear "no chat context" error
        return list(self._prompt_ids)

    # ----- teacher-forced passes ----------------------------------------------------
    def decoder_embedding(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @contextlib.contextmanager
    def zeroed_token_embeddings(self, keep: Tensor | None) -> Iterator[None]:
        r"""Zero visible decoder inputs where ``keep`` is 0; the hidden prefix is always kept.

        Args:
            keep (Tensor or None): ``(batch, num_visible_inputs)``, 1 = kept; None keeps all.
        """
        if keep is None:
            with super().zeroed_token_embeddings(None):
                yield
            return
        hidden = keep.new_ones(keep.shape[0], len(self.hidden_ids))
        with super().zeroed_token_embeddings(torch.cat([hidden, keep], dim=1)):
            yield

    def encode(self, model_inputs: Tensor) -> Tensor:
        """Projected audio embeddings ``(batch, num_audio_tokens, hidden)``."""
        raise NotImplementedError

    def expand_encoder_outputs(self, encoder_outputs: Tensor, batch: int) -> Tensor:
        return encoder_outputs.expand(batch, *encoder_outputs.shape[1:])

    def logits(
        self,
        decoder_input_ids: Tensor,
        model_inputs: Tensor | None = None,
        encoder_outputs: Tensor | None = None,
    ) -> Tensor:
        r"""Teacher-forced logits of the visible positions ``(batch, num_visible_inputs, vocab)``.

        With ``model_inputs`` the model merges audio and text itself; with ``encoder_outputs``
        (from :meth:`encode`) the audio embeddings fill the placeholders here, as the model
        does, and the model reads the embeddings.
        """
        ids = self._with_prefix(decoder_input_ids)
        mask = torch.ones_like(ids)
        if encoder_outputs is None:
            output = self.model(
                input_ids=ids,
                attention_mask=mask,
                **{self.input_name: model_inputs},
                **self._audio_kwargs(ids.shape[0], ids.device),
                use_cache=False,
            )
        else:
            embeddings = self.decoder_embedding()(ids)
            placeholders = (ids == self.audio_token_id)[..., None]
            audio = encoder_outputs.to(device=embeddings.device, dtype=embeddings.dtype)
            embeddings = embeddings.masked_scatter(placeholders, audio)
            output = self.model(inputs_embeds=embeddings, attention_mask=mask, use_cache=False)
        return output.logits[:, len(self.hidden_ids) :]


class _WhisperFeaturesLLM(SpeechLLMAdapter):
    """A speech LLM whose audio encoder reads Whisper's log-mel features, padded to a window."""

    # Whisper's feature extractor pads these models' input the way it pads Whisper's.
    padding_value = WhisperAdapter.padding_value
    floor_value = WhisperAdapter.floor_value

    @property
    def window_frames(self) -> int:
        """Frames of the encoder's fixed input window (3000 for 30 s)."""
        return int(self.model.config.audio_config.max_source_positions) * 2


class Qwen2AudioAdapter(_WhisperFeaturesLLM):
    r"""Qwen2-Audio: Whisper-style encoder, average pooling, one linear projection.

    Its processor returns ``feature_attention_mask`` ``(1, frames)``, 1 on frames that hold
    audio: the number of placeholders and the speech frames follow from it (without it every
    frame of the window counts as audio).
    """

    audio_input_names = ("feature_attention_mask",)

    def _feature_mask(self, frames: int, device: torch.device) -> Tensor:
        mask = self._audio_inputs.get("feature_attention_mask")
        if mask is None:
            return torch.ones(1, frames, dtype=torch.long, device=device)
        return mask.to(device)

    def _audio_frames(self) -> int:
        return int(self._feature_mask(self.window_frames, torch.device("cpu")).sum())

    def num_audio_tokens(self) -> int:
        _, tokens = self.model.model.audio_tower._get_feat_extract_output_lengths(torch.tensor(self._audio_frames()))
        return int(tokens)

    def speech_frames(self, inputs: Tensor) -> int:
        return self._audio_frames()

    def frames_for_samples(self, num_samples: int) -> int:
        """Frames the feature extractor's attention mask marks: one per started 10 ms hop."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be a positive int, got {num_samples!r}")
        return min(self.window_frames, math.ceil(num_samples / 160))

    def _audio_kwargs(self, batch: int, device: torch.device) -> dict[str, Tensor]:
        return {"feature_attention_mask": self._feature_mask(self.window_frames, device).expand(batch, -1)}

    def encode(self, model_inputs: Tensor) -> Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        tower = self.model.model.audio_tower
        batch, _, frames = model_inputs.shape
        lengths, tokens = tower._get_feat_extract_output_lengths(
            self._feature_mask(frames, model_inputs.device).sum(-1)
        )
        steps = (frames - 2) // 2 + 1
        valid = (torch.arange(steps, device=model_inputs.device)[None, :] < lengths[:, None]).long()
        attention = create_bidirectional_mask(
            config=tower.config,
            inputs_embeds=model_inputs.new_zeros(1, steps, 1),
            attention_mask=valid,
        )
        if attention is not None:
            attention = attention.expand(batch, *attention.shape[1:])
        hidden = tower(model_inputs, attention_mask=attention).last_hidden_state
        return self.model.model.multi_modal_projector(hidden)[:, : int(tokens[0])]


class VoxtralAdapter(_WhisperFeaturesLLM):
    r"""Voxtral: Whisper-style encoder whose frames are stacked four by four and projected.

    One utterance is one 30 s window ``(1, 128, 3000)`` (Voxtral's processor splits longer
    audio into several windows; explain them one by one). The window is encoded whole, so
    its speech frames are detected from the padding as for Whisper. Voxtral's processor
    tokenizes chats with ``mistral-common``: build the context with
    ``VoxtralProcessor.apply_chat_template(conversation, tokenize=True, return_dict=True)``
    and pass its ``input_ids`` to :meth:`set_context` (:meth:`prepare_inputs` refuses).
    """

    speech_frames = WhisperAdapter.speech_frames

    def num_audio_tokens(self) -> int:
        audio = self.model.config.audio_config
        return int(audio.max_source_positions) * int(audio.hidden_size) // int(audio.intermediate_size)

    def frames_for_samples(self, num_samples: int) -> int:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be a positive int, got {num_samples!r}")
        return min(self.window_frames, math.ceil((num_samples + 200) / 160))

    def prepare_inputs(self, processor: Any, waveform: Any, sampling_rate: int) -> Tensor:
        raise InputError(
            "VoxtralProcessor tokenizes chats with mistral-common, which captum-spes does not drive; build "
            "the chat with processor.apply_chat_template(conversation, tokenize=True, return_dict=True), "
            "then call adapter.set_context(inputs.input_ids) and explain inputs.input_features"
        )

    def encode(self, model_inputs: Tensor) -> Tensor:
        embeddings = self.model.get_audio_features(model_inputs, return_dict=True).pooler_output
        return embeddings.reshape(model_inputs.shape[0], self.num_audio_tokens(), -1)
