#!/usr/bin/env python3
r"""Sequence-generation forward wrapper: one teacher-forced pass explains every token.

:class:`SpeechSeq2SeqWrapper` holds a speech encoder-decoder and one frozen hypothesis (the
model's own output, or a target the user gives). Called on a batch of input features it
returns the log-probabilities of every explained position in one teacher-forced pass,
optionally with some decoder-input token embeddings zeroed. It is the ``forward_func`` of
:class:`~captum_spes.SPES` and works unchanged with Captum's ``Occlusion``,
``FeatureAblation``, ``IntegratedGradients``, ``Saliency`` and ``InputXGradient``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor, nn

from captum_spes.adapters import ModelAdapter, get_model_adapter
from captum_spes.errors import InputError

__all__ = ["Hypothesis", "SpeechSeq2SeqWrapper"]

TargetType = Union[None, str, Sequence[int], Tensor, "Hypothesis"]


@dataclass(frozen=True)
class Hypothesis:
    """The token sequence being explained, frozen for teacher forcing.

    With a forced prompt ``c_1 .. c_P`` and hypothesis ``y_1 .. y_K`` the decoder reads
    ``[c_1 .. c_P, y_1 .. y_K]`` and the explained positions predict
    ``[y_1 .. y_K, <eos>]``: ``K + 1`` rows, the end-of-sequence token included.

    Attributes:
        prompt_ids (list of int): forced prompt (P ids); conditions, is not explained.
        token_ids (list of int): hypothesis ``y_1 .. y_K``, without end token.
        eos_token_id (int): explained after the last hypothesis token.
        tokens (list of str): text of each explained token (``K + 1`` pieces).
        decoder_input_tokens (list of str): text of each decoder input (``P + K``).
        text (str): the hypothesis decoded without special tokens.
        source (str): "generate", "text" or "ids".
    """

    prompt_ids: list[int]
    token_ids: list[int]
    eos_token_id: int
    tokens: list[str] = field(default_factory=list)
    decoder_input_tokens: list[str] = field(default_factory=list)
    text: str = ""
    source: str = "ids"

    @property
    def num_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_explained(self) -> int:
        return len(self.token_ids) + 1

    @property
    def target_ids(self) -> list[int]:
        """Ids predicted at the explained positions, ``(K + 1,)``."""
        return list(self.token_ids) + [self.eos_token_id]

    @property
    def decoder_input_ids(self) -> list[int]:
        """Teacher-forced decoder input, ``(P + K,)``."""
        return list(self.prompt_ids) + list(self.token_ids)

    def causal_mask(self) -> Tensor:
        """Bool ``(K + 1, P + K)``: row ``k`` may credit decoder inputs ``0 .. P - 1 + k``."""
        rows = torch.arange(self.num_explained)[:, None]
        cols = torch.arange(len(self.decoder_input_ids))[None, :]
        return cols <= rows + self.num_prompt - 1


def _token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """Text of each id in context (byte-level BPE pieces need their neighbours)."""
    if tokenizer is None:
        return [str(i) for i in ids]
    pieces = []
    previous = ""
    for end in range(1, len(ids) + 1):
        current = tokenizer.decode(ids[:end], skip_special_tokens=False)
        piece = (
            current[len(previous) :]
            if current.startswith(previous)
            else tokenizer.decode(ids[end - 1 : end], skip_special_tokens=False)
        )
        pieces.append(piece)
        previous = current
    return pieces


class SpeechSeq2SeqWrapper(nn.Module):
    r"""Teacher-forced forward of a speech encoder-decoder over one frozen hypothesis.

    Call :meth:`set_hypothesis` once per utterance (SPES does it for you), then::

        log_probs = wrapper(input_features)                  # (batch, K + 1, vocab)
        log_probs = wrapper(input_features, token_keep_mask)  # zeroed token embeddings

    For Captum methods that need one scalar per example use ``target=(k, token_id)`` on
    this output, or :meth:`token_log_probs` with ``target=k``.

    Args:
        model (nn.Module): e.g. ``WhisperForConditionalGeneration``,
            ``Speech2TextForConditionalGeneration`` or ``SpeechEncoderDecoderModel``.
            Put it in eval mode; the wrapper never changes its mode.
        processor (Any, optional): a Hugging Face processor or tokenizer, used to turn a
            text target into ids and ids into text pieces.
        model_id (str, optional): a name recorded with every explanation. Default:
            ``model.name_or_path`` or the class name.
        adapter (ModelAdapter, optional): overrides the registered adapter.
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any = None,
        *,
        model_id: str | None = None,
        adapter: ModelAdapter | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter if adapter is not None else get_model_adapter(model)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.model_id = model_id or str(
            getattr(model, "captum_spes_model_id", None)
            or getattr(model, "name_or_path", None)
            or getattr(getattr(model, "config", None), "name_or_path", None)
            or type(model).__name__
        )
        self._hypothesis: Hypothesis | None = None
        self._decoder_input_ids: Tensor | None = None

    # ----- hypothesis ---------------------------------------------------------------
    @property
    def hypothesis(self) -> Hypothesis:
        if self._hypothesis is None:
            raise RuntimeError("no hypothesis is set: call wrapper.set_hypothesis(input_features, target) first")
        return self._hypothesis

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_hypothesis(
        self,
        input_features: Tensor,
        target: TargetType = None,
        *,
        prompt_ids: Sequence[int] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> Hypothesis:
        r"""Freeze the token sequence to explain for this utterance.

        Args:
            input_features (Tensor): one utterance in the model's input layout, e.g.
                ``(1, 80, 3000)`` for Whisper.
            target (str, sequence of int, Tensor or Hypothesis, optional): None decodes with
                ``model.generate`` and the model's generation config; a string is tokenized
                (without special tokens) as the hypothesis, e.g. a reference transcript;
                ids are used as they are (without prompt or end token).
            prompt_ids (sequence of int, optional): forced prompt for a given target.
                Default: the prompt that ``generate`` forces (language, task, ...).
            generate_kwargs (dict, optional): passed to ``generate`` (e.g. ``language``,
                ``task``, ``num_beams``).

        Returns:
            *Hypothesis*: also kept as :attr:`hypothesis`.
        """
        generate_kwargs = dict(generate_kwargs or {})
        inputs = input_features.to(self.device)
        eos = self.adapter.eos_token_id()
        if isinstance(target, Hypothesis):
            hypothesis = target
        elif target is None:
            sequence = self.adapter.generate(inputs, **generate_kwargs)[0]
            generated_prompt, token_ids = self.adapter.generated_hypothesis(sequence, inputs, generate_kwargs)
            hypothesis = self._build(
                list(prompt_ids) if prompt_ids is not None else generated_prompt, token_ids, eos, "generate"
            )
        else:
            if isinstance(target, str):
                if self.tokenizer is None:
                    raise InputError(
                        "target is text but the wrapper has no tokenizer: pass processor= when "
                        "building SpeechSeq2SeqWrapper, or give token ids"
                    )
                token_ids = list(self.tokenizer(target, add_special_tokens=False)["input_ids"])
                source = "text"
            else:
                values = target.tolist() if isinstance(target, Tensor) else list(target)
                if any(isinstance(v, list) for v in values):
                    raise InputError("target ids must be a flat sequence of ints for one utterance")
                token_ids = [int(v) for v in values]
                source = "ids"
            prompt = (
                list(prompt_ids) if prompt_ids is not None else self.adapter.default_prompt_ids(inputs, generate_kwargs)
            )
            hypothesis = self._build(prompt, token_ids, eos, source)
        if not hypothesis.token_ids:
            raise InputError(
                "the hypothesis is empty (the model generated no token before its end token): "
                "there is nothing to explain; pass target= with a text or token ids to explain"
            )
        if not hypothesis.prompt_ids:
            raise InputError("prompt_ids must hold at least the decoder start token")
        self._hypothesis = hypothesis
        self._decoder_input_ids = torch.tensor([hypothesis.decoder_input_ids], dtype=torch.long)
        return hypothesis

    def _build(self, prompt: list[int], token_ids: list[int], eos: int, source: str) -> Hypothesis:
        decoder_inputs = prompt + token_ids
        pieces = _token_pieces(self.tokenizer, decoder_inputs + [eos])
        text = (
            self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
            if self.tokenizer is not None
            else " ".join(str(i) for i in token_ids)
        )
        return Hypothesis(
            prompt_ids=prompt,
            token_ids=token_ids,
            eos_token_id=eos,
            tokens=pieces[len(prompt) :],
            decoder_input_tokens=pieces[: len(decoder_inputs)],
            text=text,
            source=source,
        )

    # ----- forward ------------------------------------------------------------------
    def _check_keep_mask(self, token_keep_mask: Tensor | None, batch: int) -> Tensor | None:
        if token_keep_mask is None:
            return None
        width = len(self.hypothesis.decoder_input_ids)
        if token_keep_mask.dim() == 1:
            token_keep_mask = token_keep_mask[None]
        if (
            token_keep_mask.dim() != 2
            or token_keep_mask.shape[-1] != width
            or token_keep_mask.shape[0] not in (1, batch)
        ):
            raise InputError(
                f"token_keep_mask must have shape (batch, {width}) or ({width},) with 1 where a "
                f"decoder input is kept; got {tuple(token_keep_mask.shape)}"
            )
        return token_keep_mask.expand(batch, width)

    def _explained_logits(self, logits: Tensor) -> Tensor:
        start = self.hypothesis.num_prompt - 1
        return logits[:, start : start + self.hypothesis.num_explained]

    def forward(self, input_features: Tensor, token_keep_mask: Tensor | None = None) -> Tensor:
        r"""Log-probabilities of every explained position in one teacher-forced pass.

        Args:
            input_features (Tensor): a batch in the model's layout, e.g.
                ``(batch, 80, 3000)`` for Whisper.
            token_keep_mask (Tensor, optional): ``(batch, P + K)`` or ``(P + K,)``; 0 zeroes
                that decoder input's token embedding (its position is kept). Default: all kept.

        Returns:
            *Tensor* of log-probabilities ``(batch, K + 1, vocab)``, float32 (log-softmax in
            float32 whatever the model's dtype). Differentiable unless run under
            ``torch.inference_mode``.
        """
        self.hypothesis  # noqa: B018 - raises the clear "no hypothesis is set" error
        batch = input_features.shape[0]
        keep = self._check_keep_mask(token_keep_mask, batch)
        ids = self._decoder_input_ids.to(input_features.device).expand(batch, -1)
        with self.adapter.zeroed_token_embeddings(keep):
            logits = self.adapter.logits(ids, model_inputs=input_features)
        return self._explained_logits(logits).float().log_softmax(dim=-1)

    def encode(self, input_features: Tensor) -> Any:
        """Encoder output for one utterance, to reuse across token-only perturbations."""
        return self.adapter.encode(input_features)

    def forward_from_encoder(self, encoder_outputs: Any, token_keep_mask: Tensor) -> Tensor:
        r"""Like :meth:`forward` on a cached encoder output (token perturbations only).

        Args:
            encoder_outputs: from :meth:`encode` on one utterance (batch 1); it is expanded.
            token_keep_mask (Tensor): ``(batch, P + K)``.

        Returns:
            *Tensor* ``(batch, K + 1, vocab)`` log-probabilities, float32.
        """
        batch = token_keep_mask.shape[0]
        keep = self._check_keep_mask(token_keep_mask, batch)
        expanded = self.adapter.expand_encoder_outputs(encoder_outputs, batch)
        ids = self._decoder_input_ids.to(self.device).expand(batch, -1)
        with self.adapter.zeroed_token_embeddings(keep):
            logits = self.adapter.logits(ids, encoder_outputs=expanded)
        return self._explained_logits(logits).float().log_softmax(dim=-1)

    def token_log_probs(self, input_features: Tensor, token_keep_mask: Tensor | None = None) -> Tensor:
        r"""Log-probability of each explained token, ``(batch, K + 1)``: a forward for Captum
        methods with ``target=k`` (the ``k``-th explained token)."""
        log_probs = self.forward(input_features, token_keep_mask)
        index = torch.tensor(self.hypothesis.target_ids, device=log_probs.device)
        return log_probs.gather(-1, index[None, :, None].expand(log_probs.shape[0], -1, 1))[..., 0]
