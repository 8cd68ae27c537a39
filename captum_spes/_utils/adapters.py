#!/usr/bin/env python3
r"""Model adapters: what SPES needs to know about a speech encoder-decoder.

An adapter converts between the model's input layout and SPES's canonical spectrogram
``(n_mels, n_frames)`` (mel bins as rows, time as columns), finds the speech frames of a
padded input, splits a generated sequence into forced prompt and hypothesis, and names the
decoder's input-embedding module (SPES zeroes token embeddings there, before positional
embeddings are added, as the reference's ``no_position_occlusion``).

Adapters are looked up by model class (most specific first); add one with
:func:`register_model_adapter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ModelAdapter",
    "WhisperAdapter",
    "Speech2TextAdapter",
    "SpeechEncoderDecoderAdapter",
    "MODEL_ADAPTERS",
    "register_model_adapter",
    "get_model_adapter",
]


def _config_int(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return int(value) if isinstance(value, int) else None


class ModelAdapter:
    """Generic Hugging Face encoder-decoder with ``(batch, n_mels, n_frames)`` features.

    Args:
        model (nn.Module): the model; must accept ``<input_name>=``, ``encoder_outputs=`` and
            ``decoder_input_ids=`` and return an object with ``.logits``, and expose
            ``get_encoder()`` and ``get_decoder()``.
    """

    #: keyword under which the model takes its acoustic input
    input_name: str = "input_features"
    #: "mel_first" (batch, n_mels, frames), "time_first" (batch, frames, n_mels), "waveform"
    layout: str = "mel_first"
    #: frames per second of the canonical time axis (10 ms hop for log-mel features)
    frame_rate: float = 100.0

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # ----- input layout -------------------------------------------------------------
    def expected_input_dims(self) -> int:
        return 2 if self.layout == "waveform" else 3

    def to_canonical(self, inputs: Tensor) -> Tensor:
        """Model input of one utterance ``(1, ...)`` -> ``(n_rows, n_cols)``."""
        x = inputs[0]
        if self.layout == "time_first":
            return x.transpose(0, 1)
        if self.layout == "waveform":
            return x[None, :]
        return x

    def from_canonical(self, canonical: Tensor) -> Tensor:
        """``(batch, n_rows, n_cols)`` -> model input."""
        if self.layout == "time_first":
            return canonical.transpose(1, 2)
        if self.layout == "waveform":
            return canonical[:, 0, :]
        return canonical

    def check_input(self, inputs: Tensor) -> None:
        """Raise a clear error if ``inputs`` cannot be fed to the model."""
        if inputs.dim() != self.expected_input_dims():
            shape = {
                "mel_first": "(1, n_mels, n_frames)",
                "time_first": "(1, n_frames, n_mels)",
                "waveform": "(1, num_samples)",
            }[self.layout]
            raise ValueError(
                f"inputs must have shape {shape} for {type(self.model).__name__}, got "
                f"{tuple(inputs.shape)}; use the model's feature extractor to build them"
            )

    def speech_frames(self, inputs: Tensor) -> int:
        """Frames of the canonical time axis that hold audio (all, for unpadded models)."""
        return int(self.to_canonical(inputs).shape[1])

    def floor_value(self, canonical_full: Tensor, num_frames: int) -> Tensor:
        """The features' value for silence (used by ``baselines="floor"``)."""
        return canonical_full[:, :num_frames].min()

    # ----- decoding -----------------------------------------------------------------
    def prompt_token_ids(self) -> list[int]:
        """Ids that may open a generated sequence as forced prompt tokens."""
        ids = []
        for config in (getattr(self.model, "generation_config", None), self.model.config):
            for name in ("decoder_start_token_id", "forced_bos_token_id"):
                value = _config_int(config, name) if config is not None else None
                if value is not None:
                    ids.append(value)
        return sorted(set(ids))

    def end_token_ids(self) -> list[int]:
        ids = []
        for config in (getattr(self.model, "generation_config", None), self.model.config):
            if config is None:
                continue
            eos = getattr(config, "eos_token_id", None)
            ids.extend(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
            pad = _config_int(config, "pad_token_id")
            if pad is not None:
                ids.append(pad)
        return sorted(set(ids))

    def eos_token_id(self) -> int:
        for config in (getattr(self.model, "generation_config", None), self.model.config):
            eos = getattr(config, "eos_token_id", None) if config is not None else None
            if isinstance(eos, list) and eos:
                return int(eos[0])
            if isinstance(eos, int):
                return eos
        raise ValueError(
            f"{type(self.model).__name__} has no eos_token_id in its config or generation "
            "config; set model.generation_config.eos_token_id"
        )

    def split_generated(self, sequence: Tensor) -> tuple[list[int], list[int]]:
        """Split one generated sequence into (forced prompt ids, hypothesis ids)."""
        ids = [int(i) for i in sequence.tolist()]
        prompt_set = set(self.prompt_token_ids())
        cut = 0
        while cut < len(ids) and ids[cut] in prompt_set:
            cut += 1
        if cut == 0:
            raise ValueError(
                "the generated sequence does not start with the model's decoder start token; "
                "pass the forced prompt explicitly with prompt_ids="
            )
        end = len(ids)
        stop = set(self.end_token_ids())
        # The hypothesis ends at the first end-of-sequence token; padding follows it.
        for i in range(cut, len(ids)):
            if ids[i] in stop:
                end = i
                break
        return ids[:cut], ids[cut:end]

    def generated_hypothesis(
        self, sequence: Tensor, inputs: Tensor, generate_kwargs: dict
    ) -> tuple[list[int], list[int]]:
        """(forced prompt ids, hypothesis ids) of one sequence returned by ``generate``."""
        return self.split_generated(sequence)

    def default_prompt_ids(self, inputs: Tensor, generate_kwargs: dict) -> list[int]:
        """Forced prompt for a user-given target: what ``generate`` would force."""
        with torch.inference_mode():
            sequence = self.model.generate(**{self.input_name: inputs}, **{**generate_kwargs, "max_new_tokens": 1})
        sequence = getattr(sequence, "sequences", sequence)
        return self.split_generated(sequence[0])[0]

    # ----- forward ------------------------------------------------------------------
    def decoder_embedding(self) -> nn.Module:
        """The module whose output is the (unscaled, position-free) token embeddings."""
        return self.model.get_decoder().get_input_embeddings()

    def encode(self, model_inputs: Tensor) -> Any:
        return self.model.get_encoder()(**{self.input_name: model_inputs})

    def logits(
        self,
        decoder_input_ids: Tensor,
        model_inputs: Tensor | None = None,
        encoder_outputs: Any | None = None,
    ) -> Tensor:
        """Teacher-forced logits ``(batch, num_decoder_inputs, vocab)``."""
        kwargs = {"decoder_input_ids": decoder_input_ids, "use_cache": False}
        if encoder_outputs is not None:
            kwargs["encoder_outputs"] = encoder_outputs
        else:
            kwargs[self.input_name] = model_inputs
        return self.model(**kwargs).logits


class WhisperAdapter(ModelAdapter):
    """Whisper: ``(batch, 80, 3000)`` log-mel features always padded to 30 s.

    Speech frames are detected as the frames before the trailing run in which every mel
    bin sits at the padding floor ``max - 2`` (Whisper's ``(max(log10, m - 8) + 4) / 4``
    scaling puts zero-padded audio exactly there); pass ``num_frames`` to SPES to override.
    The detected length is ``ceil(samples / 160)`` plus the one or two frames whose 25 ms
    analysis window still overlaps the end of the audio. Digital silence at the very end of
    a recording is indistinguishable from padding and is excluded too. In float16/bfloat16
    features, values within rounding of the floor count as padding, so the last frame can
    be one fewer than in float32; pass the same ``num_frames`` to compare precisions.
    """

    def speech_frames(self, inputs: Tensor) -> int:
        canonical = self.to_canonical(inputs)
        x = canonical.float()
        floor = x.max() - 2.0
        # Features cast to half precision after scaling hold a floor rounded on its own, which
        # can sit a few units in the last place from the rounded max minus 2.
        tolerance = 1e-6 + 4 * torch.finfo(canonical.dtype).eps * max(1.0, float(x.abs().max()))
        at_floor = (x <= floor + tolerance).all(dim=0)
        speech = (~at_floor).nonzero()
        return int(speech[-1]) + 1 if speech.numel() else int(x.shape[1])

    def floor_value(self, canonical_full: Tensor, num_frames: int) -> Tensor:
        return canonical_full.max() - 2.0

    def prompt_token_ids(self) -> list[int]:
        config = getattr(self.model, "generation_config", None)
        start = _config_int(config, "decoder_start_token_id") or _config_int(
            self.model.config, "decoder_start_token_id"
        )
        no_timestamps = _config_int(config, "no_timestamps_token_id")
        if start is None:
            return super().prompt_token_ids()
        if no_timestamps is None or no_timestamps < start:
            return [start]
        # <|startoftranscript|>, languages, tasks, <|startoflm|>, <|startofprev|>,
        # <|nospeech|> and <|notimestamps|> are contiguous in every Whisper vocabulary.
        return list(range(start, no_timestamps + 1))

    # transformers 5 strips the forced prompt from Whisper's generate output, so the
    # prompt is rebuilt from the generation config, as Whisper's generate builds it.
    def _strip(self, ids: list[int]) -> tuple[list[int], list[int]]:
        prompt_set = set(self.prompt_token_ids())
        cut = 0
        while cut < len(ids) and ids[cut] in prompt_set:
            cut += 1
        stop = set(self.end_token_ids())
        end = next((i for i in range(cut, len(ids)) if ids[i] in stop), len(ids))
        return ids[:cut], ids[cut:end]

    def generated_hypothesis(
        self, sequence: Tensor, inputs: Tensor, generate_kwargs: dict
    ) -> tuple[list[int], list[int]]:
        prompt, hypothesis = self._strip([int(i) for i in sequence.tolist()])
        return (prompt or self.default_prompt_ids(inputs, generate_kwargs)), hypothesis

    def default_prompt_ids(self, inputs: Tensor, generate_kwargs: dict) -> list[int]:
        config = self.model.generation_config
        prompt = [int(config.decoder_start_token_id)]
        lang_to_id = getattr(config, "lang_to_id", None) or {}
        task_to_id = getattr(config, "task_to_id", None) or {}
        if getattr(config, "is_multilingual", False) or lang_to_id:
            language = generate_kwargs.get("language", getattr(config, "language", None))
            if language is None:
                with torch.inference_mode():
                    prompt.append(int(self.model.detect_language(inputs).reshape(-1)[0]))
            else:
                prompt.append(self._language_id(language, lang_to_id))
            task = generate_kwargs.get("task", getattr(config, "task", None)) or "transcribe"
            if task not in task_to_id:
                raise ValueError(f"task={task!r} is not one of this model's tasks {sorted(task_to_id)}")
            prompt.append(int(task_to_id[task]))
        return_timestamps = generate_kwargs.get("return_timestamps", getattr(config, "return_timestamps", False))
        no_timestamps = _config_int(config, "no_timestamps_token_id")
        if no_timestamps is not None and not return_timestamps:
            prompt.append(no_timestamps)
        return prompt

    @staticmethod
    def _language_id(language: str, lang_to_id: dict) -> int:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

        code = language.strip("<|>").lower()
        code = TO_LANGUAGE_CODE.get(code, code)
        token = f"<|{code}|>"
        if token not in lang_to_id:
            raise ValueError(
                f"language={language!r} is not supported by this model; use a code such as {sorted(LANGUAGES)[:5]}..."
            )
        return int(lang_to_id[token])


class Speech2TextAdapter(ModelAdapter):
    """Speech2Text (S2T): ``(batch, frames, n_mels)`` filterbanks, no padding."""

    layout = "time_first"


class SpeechEncoderDecoderAdapter(ModelAdapter):
    """:class:`~transformers.SpeechEncoderDecoderModel`: log-mel encoders (``input_features``)
    are perturbed like spectrograms; waveform encoders (``input_values``, e.g. wav2vec 2.0)
    are perturbed on a one-row ``(1, num_samples)`` canonical input, for which only
    time-based masks make sense."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        encoder_input = getattr(model.get_encoder(), "main_input_name", "input_values")
        if encoder_input == "input_features":
            self.input_name = "input_features"
            # S2T-style encoders take (batch, frames, mels); Whisper-style take (batch, mels, frames).
            is_whisper = "whisper" in type(model.get_encoder()).__name__.lower()
            self.layout = "mel_first" if is_whisper else "time_first"
        elif encoder_input == "input_values":
            self.input_name = "input_values"
            self.layout = "waveform"
            rate = getattr(getattr(model.config, "encoder", None), "sampling_rate", None)
            self.frame_rate = float(rate) if rate else 16000.0
        else:
            raise ValueError(
                f"unsupported model: its encoder takes {encoder_input!r}; SPES needs input_features or input_values"
            )


MODEL_ADAPTERS: list[tuple[type[nn.Module], Callable[[nn.Module], ModelAdapter]]] = []


def register_model_adapter(model_class: type[nn.Module], factory: Callable[[nn.Module], ModelAdapter]) -> None:
    """Use ``factory(model)`` for instances of ``model_class`` (checked before earlier ones)."""
    MODEL_ADAPTERS.insert(0, (model_class, factory))


def _register_transformers_adapters() -> None:
    import transformers

    for class_name, factory in (
        ("SpeechEncoderDecoderModel", SpeechEncoderDecoderAdapter),
        ("Speech2TextForConditionalGeneration", Speech2TextAdapter),
        ("WhisperForConditionalGeneration", WhisperAdapter),
    ):
        model_class = getattr(transformers, class_name, None)
        if model_class is not None:
            MODEL_ADAPTERS.append((model_class, factory))


_register_transformers_adapters()


def get_model_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, or a clear error naming the supported models."""
    for model_class, factory in MODEL_ADAPTERS:
        if isinstance(model, model_class):
            return factory(model)
    supported = ", ".join(cls.__name__ for cls, _ in MODEL_ADAPTERS)
    raise TypeError(
        f"unsupported model {type(model).__name__}: SPES explains autoregressive speech "
        f"encoder-decoders ({supported}); register others with "
        "captum_spes.register_model_adapter(ModelClass, AdapterFactory)"
    )
