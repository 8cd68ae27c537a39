#!/usr/bin/env python3
r"""The model adapter: every model-specific call SPES makes, behind one class.

An adapter converts between the model's input layout and SPES's canonical spectrogram
``(n_mels, n_frames)``, finds the speech frames of a padded input, decodes (``generate``),
runs the encoder and the teacher-forced logits, splits a generated sequence into forced
prompt and hypothesis, and names the decoder's input-embedding module (SPES zeroes token
embeddings there, before positional embeddings are added: the reference's
``no_position_occlusion``). Nothing else in captum-spes calls the model directly, so a new
model family is one adapter class (:func:`~captum_spes.adapters.register_model_adapter`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from captum_spes.adapters.layout import InputLayout
from captum_spes.errors import InputError
from captum_spes.masks import MaskFamily, SLICMasks, TimeMasks

__all__ = ["ModelAdapter", "config_int"]


def config_int(config: Any, name: str) -> int | None:
    """``config.name`` if it is an int, else None."""
    value = getattr(config, name, None)
    return int(value) if isinstance(value, int) else None


class ModelAdapter:
    """Generic Hugging Face speech encoder-decoder with ``(batch, n_mels, n_frames)`` features.

    Args:
        model (nn.Module): the model; must accept ``<input_name>=``, ``encoder_outputs=`` and
            ``decoder_input_ids=`` and return an object with ``.logits``, expose
            ``get_encoder()`` and ``get_decoder()``, and (to decode a hypothesis) ``generate``.
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
    @property
    def input_layout(self) -> InputLayout:
        return InputLayout(self.layout)

    def expected_input_dims(self) -> int:
        return self.input_layout.input_dims

    def to_canonical(self, inputs: Tensor) -> Tensor:
        """Model input of one utterance ``(1, ...)`` -> ``(n_rows, n_cols)``."""
        return self.input_layout.to_canonical(inputs)

    def from_canonical(self, canonical: Tensor) -> Tensor:
        """``(batch, n_rows, n_cols)`` -> model input."""
        return self.input_layout.from_canonical(canonical)

    def check_input(self, inputs: Tensor) -> None:
        """Raise a clear error if ``inputs`` cannot be fed to the model."""
        self.input_layout.check(inputs, type(self.model).__name__)
        expected = config_int(getattr(self.model, "config", None), "num_mel_bins")
        if expected is not None and self.layout != "waveform":
            rows = int(self.to_canonical(inputs).shape[0])
            if rows != expected:
                raise InputError(
                    f"inputs have {rows} mel bins but {type(self.model).__name__} expects {expected}; build the "
                    "features with this model's own processor/feature extractor"
                )

    def speech_frames(self, inputs: Tensor) -> int:
        """Frames of the canonical time axis that hold audio (all, for unpadded models)."""
        return int(self.to_canonical(inputs).shape[1])

    def frames_for_samples(self, num_samples: int) -> int | None:
        """Canonical frames that hold ``num_samples`` audio samples, or None if unknown."""
        return None

    def floor_value(self, canonical_full: Tensor, num_frames: int) -> Tensor:
        """The features' value for silence (used by ``baselines="floor"``)."""
        return canonical_full[:, :num_frames].min()

    def row_frequencies_hz(self) -> Tensor | None:
        """Centre frequency of every canonical row, or None for log-mel rows (whose Slaney-mel
        centres the plots compute themselves)."""
        return None

    def default_mask_family(self) -> MaskFamily:
        """The segmentation used when ``feature_mask`` is None: the published multi-scale SLIC
        for time-frequency inputs; 20 ms time segments for a one-row (waveform) input, where
        SLIC would see a one-pixel-high image."""
        if self.layout == "waveform":
            return TimeMasks(frames_per_segment=max(1, round(0.02 * self.frame_rate)))
        return SLICMasks()

    # ----- model state --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check_eval_mode(self) -> None:
        """Refuse a model in training mode: dropout would make every pass, and the map, random."""
        training = [name or type(self.model).__name__ for name, m in self.model.named_modules() if m.training]
        if training:
            raise InputError(
                f"the model is in training mode ({len(training)} modules, e.g. {training[0]!r}), so dropout "
                "makes every forward pass random and the explanation irreproducible; call model.eval() first"
            )

    # ----- decoding -----------------------------------------------------------------
    def generate(self, model_inputs: Tensor, **generate_kwargs: Any) -> Tensor:
        """Free decoding of a batch; returns the generated ids ``(batch, length)``."""
        with torch.inference_mode():
            output = self.model.generate(**{self.input_name: model_inputs}, **generate_kwargs)
        return getattr(output, "sequences", output)

    def prompt_token_ids(self) -> list[int]:
        """Ids that may open a generated sequence as forced prompt tokens."""
        ids = []
        for config in (getattr(self.model, "generation_config", None), self.model.config):
            for name in ("decoder_start_token_id", "forced_bos_token_id"):
                value = config_int(config, name) if config is not None else None
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
            pad = config_int(config, "pad_token_id")
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
        raise InputError(
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
            raise InputError(
                "the generated sequence does not start with the model's decoder start token; "
                "pass the forced prompt explicitly with prompt_ids="
            )
        stop = set(self.end_token_ids())
        # The hypothesis ends at the first end-of-sequence token; padding follows it.
        end = next((i for i in range(cut, len(ids)) if ids[i] in stop), len(ids))
        return ids[:cut], ids[cut:end]

    def generated_hypothesis(
        self, sequence: Tensor, inputs: Tensor, generate_kwargs: dict
    ) -> tuple[list[int], list[int]]:
        """(forced prompt ids, hypothesis ids) of one sequence returned by :meth:`generate`."""
        return self.split_generated(sequence)

    def default_prompt_ids(self, inputs: Tensor, generate_kwargs: dict) -> list[int]:
        """Forced prompt for a user-given target: what ``generate`` would force."""
        sequence = self.generate(inputs, **{**generate_kwargs, "max_new_tokens": 1})
        return self.split_generated(sequence[0])[0]

    # ----- teacher-forced passes ----------------------------------------------------
    def decoder_embedding(self) -> nn.Module:
        """The module whose output is the (unscaled, position-free) token embeddings."""
        return self.model.get_decoder().get_input_embeddings()

    @contextlib.contextmanager
    def zeroed_token_embeddings(self, keep: Tensor | None) -> Iterator[None]:
        r"""Within the context, decoder-input token embeddings where ``keep`` is 0 are zeroed
        before positions are added (the reference's ``no_position_occlusion``).

        Args:
            keep (Tensor or None): ``(batch, num_decoder_inputs)``, 1 = kept; None keeps all.
        """
        if keep is None:
            yield
            return

        def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            return output * keep.to(dtype=output.dtype, device=output.device)[..., None]

        handle = self.decoder_embedding().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def prepare_inputs(self, processor: Any, waveform: Any, sampling_rate: int) -> Tensor:
        """The model input of one clip ``(1, ...)``, from the model's processor (an adapter whose
        model needs more than features, e.g. a speech LLM's chat, also sets it up here)."""
        return processor(waveform, sampling_rate=sampling_rate, return_tensors="pt")[self.input_name]

    def utterance_layout(self, inputs: Tensor) -> InputLayout:
        """The layout of one utterance's input; an adapter whose canonical view depends on the
        utterance (e.g. an STFT of a waveform, with its phase) returns one built for it."""
        return self.input_layout

    def encode(self, model_inputs: Tensor) -> Any:
        """Encoder output of a batch, to reuse across token-only perturbations."""
        return self.model.get_encoder()(**{self.input_name: model_inputs})

    def expand_encoder_outputs(self, encoder_outputs: Any, batch: int) -> Any:
        """The encoder output of one utterance repeated ``batch`` times (a view, no copy)."""
        hidden = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list)) else encoder_outputs.last_hidden_state
        return (hidden.expand(batch, *hidden.shape[1:]),)

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
