#!/usr/bin/env python3
r"""Whisper: ``(batch, 80, 3000)`` log-mel features, always padded to 30 s."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from captum_spes.adapters.base import ModelAdapter, config_int
from captum_spes.errors import InputError

__all__ = ["WhisperAdapter", "WHISPER_SILENCE_FEATURE"]

#: Whisper's feature for digital silence: ``(log10(1e-10) + 4) / 4``, the mel power clamped
#: at 1e-10 before the log. The clamp at ``max - 8`` (``max - 2`` after scaling) lifts it
#: only when the loudest bin is above ``log10 = -2``: in quiet audio padding sits here.
WHISPER_SILENCE_FEATURE = -1.5

_HOP = 160
_HALF_WINDOW = 200  # n_fft 400, centred frames


class WhisperAdapter(ModelAdapter):
    r"""Whisper: ``(batch, 80, 3000)`` log-mel features always padded to 30 s.

    Speech frames are the frames before the trailing run in which every mel bin sits at the
    padding value ``max(m - 2, -1.5)`` for the largest feature ``m`` (Whisper's scaling
    ``(max(log10 P, log10 P_max - 8) + 4) / 4`` puts zero-padded audio at ``m - 2``, or at
    digital silence's ``-1.5`` when the audio is so quiet that the clamp does not reach it).
    The detected length is ``ceil(samples / 160)`` plus the one or two frames whose 25 ms
    analysis window still overlaps the end of the audio (:meth:`frames_for_samples` computes
    it from the audio length, which is exact and should be preferred when known). Digital
    silence at the very end of a recording is indistinguishable from padding and is
    excluded by the detection. In float16/bfloat16 features, values within rounding of the
    padding value count as padding, so the last frame can be one fewer than in float32.
    """

    def padding_value(self, canonical: Tensor) -> float:
        """The value every bin of a padded frame holds in these features."""
        return max(float(canonical.float().max()) - 2.0, WHISPER_SILENCE_FEATURE)

    def speech_frames(self, inputs: Tensor) -> int:
        canonical = self.to_canonical(inputs)
        x = canonical.float()
        floor = self.padding_value(x)
        # Features cast to half precision after scaling hold a floor rounded on its own, which
        # can sit a few units in the last place from the rounded max minus 2.
        tolerance = 1e-6 + 4 * torch.finfo(canonical.dtype).eps * max(1.0, float(x.abs().max()))
        at_floor = (x <= floor + tolerance).all(dim=0)
        speech = (~at_floor).nonzero()
        return int(speech[-1]) + 1 if speech.numel() else int(x.shape[1])

    def frames_for_samples(self, num_samples: int) -> int:
        """Frames whose analysis window overlaps the first ``num_samples`` samples (16 kHz)."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be a positive int, got {num_samples!r}")
        window = int(getattr(self.model.config, "max_source_positions", 1500)) * 2
        return min(window, math.ceil((num_samples + _HALF_WINDOW) / _HOP))

    def generate(self, model_inputs: Tensor, **generate_kwargs: Any) -> Tensor:
        self.check_generate_kwargs(generate_kwargs)
        return super().generate(model_inputs, **generate_kwargs)

    def check_generate_kwargs(self, generate_kwargs: dict) -> None:
        """Refuse a language or task this checkpoint cannot take, before transformers does it
        less clearly (an English-only model has no language or task tokens)."""
        config = self.model.generation_config
        multilingual = bool(getattr(config, "is_multilingual", False) or getattr(config, "lang_to_id", None))
        if multilingual:
            return
        given = [name for name in ("language", "task") if generate_kwargs.get(name) not in (None, "transcribe")]
        if given:
            name = getattr(self.model, "captum_spes_model_id", type(self.model).__name__)
            raise InputError(
                f"{name} is an English-only Whisper: it is not compatible with the `{given[0]}` argument "
                f"({given[0]}={generate_kwargs[given[0]]!r}); drop it, or use a multilingual model such as 'base'"
            )

    def floor_value(self, canonical_full: Tensor, num_frames: int) -> Tensor:
        return torch.tensor(self.padding_value(canonical_full), dtype=canonical_full.dtype)

    def prompt_token_ids(self) -> list[int]:
        config = getattr(self.model, "generation_config", None)
        start = config_int(config, "decoder_start_token_id") or config_int(self.model.config, "decoder_start_token_id")
        no_timestamps = config_int(config, "no_timestamps_token_id")
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
        self.check_generate_kwargs(generate_kwargs)
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
                raise InputError(f"task={task!r} is not one of this model's tasks {sorted(task_to_id)}")
            prompt.append(int(task_to_id[task]))
        return_timestamps = generate_kwargs.get("return_timestamps", getattr(config, "return_timestamps", False))
        no_timestamps = config_int(config, "no_timestamps_token_id")
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
            raise InputError(
                f"language={language!r} is not supported by this model; use a code such as {sorted(LANGUAGES)[:5]}..."
            )
        return int(lang_to_id[token])
