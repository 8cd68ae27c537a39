#!/usr/bin/env python3
r"""The result of a SPES attribution: maps for every explained token, with their context.

:class:`SPESResult` holds the per-token spectrogram maps ``(num_tokens, n_mels, n_frames)``
at the real audio length, the causal token map ``(num_tokens, num_decoder_inputs)``, the
tokens, the clean log-probabilities and the metadata needed to reproduce the run. It saves to
one ``safetensors`` file (tensors plus JSON metadata; loading never unpickles) and offers the
reference normalisers, word merging and time/frequency profiles. It also keeps, for every
token and every independently estimated unit of the maps, the estimate's standard error and
z statistic, so that a map can be read with its noise (:meth:`SPESResult.significance`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from captum_spes._utils.files import atomic_write, refuse_overwrite
from captum_spes.errors import InputError
from captum_spes.normalizers import NORMALIZERS
from captum_spes.statistics import p_values, significant

if TYPE_CHECKING:
    from captum_spes._core.estimators import Estimate
    from captum_spes._core.forward_wrapper import Hypothesis

__all__ = ["SPESResult"]

_FORMAT = "captum-spes-result"
_FORMAT_VERSION = 2
#: tensors that a result may hold besides the maps (all optional: results made before
#: format version 2, or by other methods, have none)
_UNCERTAINTY = ("units", "unit_occluded", "spectrogram_se", "spectrogram_z", "token_occluded", "token_se", "token_z")
_REDUCTIONS = ("max", "mean", "sum")


def _reduce(values: Tensor, dim: int, how: str) -> Tensor:
    if how == "max":
        return values.max(dim=dim).values
    if how == "mean":
        return values.mean(dim=dim)
    if how == "sum":
        return values.sum(dim=dim)
    raise InputError(f"reduce must be one of {_REDUCTIONS}, got {how!r}")


def _merge_z(z: Tensor, rows: list[list[int]], columns: list[list[int]] | None = None) -> Tensor:
    """One-sided z of groups of rows (and of columns): the group's smallest p-value,
    Bonferroni-corrected for the group's size; NaN where every member is NaN."""
    p = torch.nan_to_num(p_values(z), nan=float("inf"))
    merged = torch.stack([p[g].amin(0) * len(g) for g in rows])
    if columns is not None:
        merged = torch.stack([merged[:, c].amin(1) * len(c) for c in columns], dim=1)
    merged = torch.where(torch.isinf(merged), torch.full_like(merged, float("nan")), merged.clamp(max=1.0))
    return torch.special.ndtri(1 - merged).to(torch.float32)


@dataclass
class SPESResult:
    r"""Token-level SPES explanation of one utterance.

    Attributes:
        spectrogram_attr (Tensor): ``(num_tokens, n_mels, n_frames)`` float32, the mean
            impact (KL by default) over the masks that occluded each element; speech frames
            only, unnormalised.
        token_attr (Tensor or None): ``(num_tokens, num_decoder_inputs)``, causal (row ``k``
            is 0 after decoder input ``P - 1 + k``); None when token masks were off.
        target_ids (list of int): explained ids (hypothesis then end token), ``num_tokens``.
        tokens (list of str): their text pieces.
        decoder_input_ids (list of int): teacher-forced decoder inputs (prompt + hypothesis).
        decoder_input_tokens (list of str): their text pieces (token-map column labels).
        num_prompt (int): forced prompt tokens at the start of the decoder inputs.
        target_log_probs (Tensor): ``(num_tokens,)`` clean log-probability of each token.
        text (str): the explained hypothesis.
        metadata (dict): configuration, seed, masks and segments per level, model, audio
            length, frame rate, library versions, timing.
        units (Tensor or None): long ``(n_mels, n_frames)``, the independent unit of every
            element of the spectrogram map (elements occluded by exactly the same masks).
        unit_occluded (Tensor or None): ``(num_units,)``, masks that occluded each unit.
        spectrogram_se (Tensor or None): ``(num_tokens, num_units)`` standard error of each
            unit's attribution; :attr:`standard_error` gives it per element.
        spectrogram_z (Tensor or None): ``(num_tokens, num_units)`` the estimator's z
            statistic that the unit raises the impact; :attr:`z_map` gives it per element.
        token_occluded (Tensor or None): ``(num_decoder_inputs,)`` masks that zeroed each
            decoder input.
        token_se, token_z (Tensor or None): ``(num_tokens, num_decoder_inputs)``, the same
            for the token map.
    """

    spectrogram_attr: Tensor
    token_attr: Tensor | None
    target_ids: list[int]
    tokens: list[str]
    decoder_input_ids: list[int]
    decoder_input_tokens: list[str]
    num_prompt: int
    target_log_probs: Tensor
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    units: Tensor | None = None
    unit_occluded: Tensor | None = None
    spectrogram_se: Tensor | None = None
    spectrogram_z: Tensor | None = None
    token_occluded: Tensor | None = None
    token_se: Tensor | None = None
    token_z: Tensor | None = None

    @classmethod
    def from_estimates(
        cls,
        hypothesis: Hypothesis,
        clean_log_probs: Tensor,
        spectrogram: Estimate,
        tokens: Estimate | None,
        metadata: dict[str, Any],
    ) -> SPESResult:
        r"""Assemble a result from the estimators' outputs (what :class:`~captum_spes.SPES` does).

        Args:
            hypothesis (Hypothesis): the explained sequence.
            clean_log_probs (Tensor): ``(num_tokens, vocab)`` clean log-probabilities.
            spectrogram (Estimate): the spectrogram map ``(num_tokens, n_mels, n_frames)``.
            tokens (Estimate or None): the token map ``(num_tokens, num_decoder_inputs)``;
                entries after a row's causal limit are set to 0 (and their statistics to NaN).
            metadata (dict): configuration and run facts.
        """
        token_attr = token_se = token_z = token_occluded = None
        if tokens is not None:
            causal = hypothesis.causal_mask().to(tokens.attribution.device)
            token_attr = torch.where(causal, tokens.attribution, torch.zeros_like(tokens.attribution)).cpu()
            nan = torch.full_like(tokens.z, float("nan"))
            # Token units are the decoder-input columns, in order.
            token_se = torch.where(causal, tokens.standard_error, nan).cpu()
            token_z = torch.where(causal, tokens.z, nan).cpu()
            token_occluded = tokens.occluded.cpu()
        target_ids = torch.tensor(hypothesis.target_ids, device=clean_log_probs.device)
        return cls(
            spectrogram_attr=spectrogram.attribution.cpu(),
            token_attr=token_attr,
            target_ids=hypothesis.target_ids,
            tokens=list(hypothesis.tokens),
            decoder_input_ids=hypothesis.decoder_input_ids,
            decoder_input_tokens=list(hypothesis.decoder_input_tokens),
            num_prompt=hypothesis.num_prompt,
            target_log_probs=clean_log_probs.gather(-1, target_ids[:, None])[:, 0].float().cpu(),
            text=hypothesis.text,
            metadata=metadata,
            units=spectrogram.units.cpu(),
            unit_occluded=spectrogram.occluded.cpu(),
            spectrogram_se=spectrogram.standard_error.cpu(),
            spectrogram_z=spectrogram.z.cpu(),
            token_occluded=token_occluded,
            token_se=token_se,
            token_z=token_z,
        )

    # ----- shapes -------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return int(self.spectrogram_attr.shape[0])

    @property
    def n_mels(self) -> int:
        return int(self.spectrogram_attr.shape[1])

    @property
    def n_frames(self) -> int:
        return int(self.spectrogram_attr.shape[2])

    @property
    def frame_rate(self) -> float:
        """Frames per second of the time axis (100 for a 10 ms hop)."""
        return float(self.metadata.get("frame_rate", 100.0))

    @property
    def duration(self) -> float:
        """Seconds of audio covered by the maps."""
        return self.n_frames / self.frame_rate

    def token_valid_mask(self) -> Tensor:
        """Bool ``(num_tokens, num_decoder_inputs)``: entries a causal token map may fill and
        that some mask tested (a never-zeroed column, e.g. a kept prompt, has no estimate)."""
        rows = torch.arange(self.num_tokens)[:, None]
        cols = torch.arange(len(self.decoder_input_ids))[None, :]
        valid = cols <= rows + self.num_prompt - 1
        if self.token_occluded is not None:
            valid = valid & (self.token_occluded > 0)[None, :]
        return valid

    def spectrogram_valid_mask(self) -> Tensor | None:
        """Bool ``(n_mels, n_frames)``: elements some mask occluded (None if not recorded)."""
        if self.units is None or self.unit_occluded is None:
            return None
        return (self.unit_occluded > 0)[self.units]

    # ----- uncertainty --------------------------------------------------------------
    def _require_uncertainty(self, standard_error: bool = False) -> None:
        if self.units is None or self.spectrogram_z is None:
            raise InputError(
                "this result holds no uncertainty (made before captum-spes 0.2 or by another method); "
                "recompute it with SPES.attribute"
            )
        if standard_error and self.spectrogram_se is None:
            raise InputError(
                "this result's standard errors were dropped by normalize() or to_words() (they are in the raw "
                "map's units); read them from the result SPES.attribute returned"
            )

    @property
    def num_units(self) -> int:
        """Independently estimated units of the spectrogram map (its effective resolution)."""
        self._require_uncertainty()
        assert self.unit_occluded is not None
        return int(self.unit_occluded.shape[0])

    @property
    def standard_error(self) -> Tensor:
        """Standard error of every element's attribution, ``(num_tokens, n_mels, n_frames)``."""
        self._require_uncertainty(standard_error=True)
        assert self.spectrogram_se is not None and self.units is not None
        return self.spectrogram_se[:, self.units]

    @property
    def z_map(self) -> Tensor:
        """The estimator's z statistic per element, ``(num_tokens, n_mels, n_frames)``; NaN
        where it is undefined (e.g. an element occluded by fewer than two masks)."""
        self._require_uncertainty()
        assert self.spectrogram_z is not None and self.units is not None
        return self.spectrogram_z[:, self.units]

    def significance(
        self, alpha: float = 0.05, correction: str | None = "fdr_bh", tail: str = "greater", of: str = "spectrogram"
    ) -> Tensor:
        r"""Which parts of the map are distinguishable from Monte-Carlo noise.

        Each token's units are tested at once (one test per independent unit, not per
        element); see :mod:`captum_spes.statistics` for the tests and the corrections.

        Args:
            alpha (float, optional): level. Default: 0.05
            correction (str or None, optional): ``"fdr_bh"`` (Benjamini-Hochberg false
                discovery rate, default), ``"holm"``, ``"bonferroni"`` or None.
            tail (str, optional): ``"greater"`` (occluding raises the impact) or
                ``"two-sided"``. Default: "greater"
            of (str, optional): ``"spectrogram"`` -> ``(num_tokens, n_mels, n_frames)``, or
                ``"tokens"`` -> ``(num_tokens, num_decoder_inputs)`` (causal entries only).

        Returns:
            *Tensor* bool: True where significant.
        """
        if of == "spectrogram":
            self._require_uncertainty()
            assert self.spectrogram_z is not None and self.units is not None
            return significant(self.spectrogram_z, alpha, correction, tail)[:, self.units]
        if of == "tokens":
            if self.token_z is None:
                raise InputError("this result has no token-map statistics (token_p=None, or an old result)")
            z = torch.where(self.token_valid_mask(), self.token_z, torch.full_like(self.token_z, float("nan")))
            return significant(z, alpha, correction, tail)
        raise InputError(f'of must be "spectrogram" or "tokens", got {of!r}')

    # ----- transformations ----------------------------------------------------------
    def normalize(self, method: str = "reference") -> SPESResult:
        r"""A copy with normalised maps (the stored maps stay raw).

        Args:
            method (str, optional): ``"single_mean_std"``, ``"paired_min_max"`` or
                ``"reference"`` (both, in that order, as the reference's evaluation).
                Default: "reference"
        """
        if method not in NORMALIZERS:
            raise InputError(f"method must be one of {sorted(NORMALIZERS)}, got {method!r}")
        spec, tok = NORMALIZERS[method](
            self.spectrogram_attr,
            self.token_attr,
            self.token_valid_mask(),
            spectrogram_valid=self.spectrogram_valid_mask(),
        )
        history = list(self.metadata.get("normalization", [])) + [method]
        # z statistics do not change under a positive affine rescaling of a row; standard
        # errors are in the raw map's units and are dropped rather than left misleading.
        return replace(
            self,
            spectrogram_attr=spec,
            token_attr=tok,
            spectrogram_se=None,
            token_se=None,
            metadata={**self.metadata, "normalization": history},
        )

    def word_groups(self) -> list[list[int]]:
        """Indices of the explained tokens forming each word; the end token stands alone.

        A token whose text starts with whitespace opens a new word (Whisper's byte-level BPE
        and SentencePiece both mark word starts this way).
        """
        groups: list[list[int]] = []
        for index, piece in enumerate(self.tokens[:-1]):
            if not groups or piece[:1].isspace():
                groups.append([index])
            else:
                groups[-1].append(index)
        groups.append([self.num_tokens - 1])
        return groups

    def to_words(self, reduce: str = "max") -> SPESResult:
        r"""Merge subword tokens into words, rows and token-map columns alike.

        Args:
            reduce (str, optional): how token rows combine: "max" (as Echoes of Phonetics),
                "mean" or "sum". Default: "max"

        Returns:
            *SPESResult* with one row per word (plus the end token); ``target_ids`` keeps the
            first id of each word and ``metadata["word_groups"]`` the token indices. A word's
            z statistic tests "some token of the word depends on this unit": the smallest
            one-sided p-value of its tokens, Bonferroni-corrected for their number; standard
            errors are dropped (a maximum has none of its own).
        """
        groups = self.word_groups()
        spec = torch.stack([_reduce(self.spectrogram_attr[g], 0, reduce) for g in groups])
        tokens = ["".join(self.tokens[i] for i in g) for g in groups]
        prompt = self.num_prompt
        columns = [[c] for c in range(prompt)] + [[prompt + i for i in g] for g in groups[:-1]]
        token_attr = None
        if self.token_attr is not None:
            rows = torch.stack([_reduce(self.token_attr[g], 0, reduce) for g in groups])
            token_attr = torch.stack([_reduce(rows[:, c], 1, reduce) for c in columns], dim=1)
            # A word may credit the inputs before its last token: keep the map causal per word.
            valid = torch.arange(len(columns))[None, :] <= torch.arange(len(groups))[:, None] + prompt - 1
            token_attr = torch.where(valid, token_attr, torch.zeros_like(token_attr))
        input_tokens = [self.decoder_input_tokens[c] for c in range(prompt)] + tokens[:-1]
        input_ids = [self.decoder_input_ids[c[0]] for c in columns]
        return replace(
            self,
            spectrogram_attr=spec,
            token_attr=token_attr,
            target_ids=[self.target_ids[g[0]] for g in groups],
            tokens=tokens,
            decoder_input_ids=input_ids,
            decoder_input_tokens=input_tokens,
            target_log_probs=torch.stack([self.target_log_probs[g].sum() for g in groups]),
            metadata={**self.metadata, "word_groups": groups, "word_reduce": reduce},
            spectrogram_se=None,
            token_se=None,
            spectrogram_z=None if self.spectrogram_z is None else _merge_z(self.spectrogram_z, groups),
            token_z=None if self.token_z is None else _merge_z(self.token_z, groups, columns),
            token_occluded=None
            if self.token_occluded is None
            else torch.stack([self.token_occluded[c].min() for c in columns]),
        )

    def time_profile(self, reduce: str = "mean") -> Tensor:
        """Saliency over time, ``(num_tokens, n_frames)``, reducing the mel axis."""
        return _reduce(self.spectrogram_attr, 1, reduce)

    def frequency_profile(self, reduce: str = "mean") -> Tensor:
        """Saliency over mel bins, ``(num_tokens, n_mels)``, reducing the time axis."""
        return _reduce(self.spectrogram_attr, 2, reduce)

    def utterance_map(self, normalize: str | None = "reference") -> Tensor:
        """Mean over tokens of the (normalised) maps, ``(n_mels, n_frames)``: the map the
        reference ranks for deletion and insertion."""
        result = self.normalize(normalize) if normalize else self
        return result.spectrogram_attr.mean(dim=0)

    def to_input_layout(self, total_frames: int | None = None) -> Tensor:
        r"""Captum-shaped attributions ``(num_tokens, n_mels, total_frames)``: the maps
        zero-padded to the model's input length (e.g. 3000 for Whisper), as a multi-output
        Captum method would return them for a ``(1, n_mels, total_frames)`` input."""
        total = total_frames or int(self.metadata.get("input_frames", self.n_frames))
        if total < self.n_frames:
            raise InputError(f"total_frames must be >= n_frames ({self.n_frames}), got {total}")
        out = self.spectrogram_attr.new_zeros(self.num_tokens, self.n_mels, total)
        out[..., : self.n_frames] = self.spectrogram_attr
        return out

    def as_tuple(self) -> tuple[Tensor, Tensor | None]:
        """``(spectrogram_attr, token_attr)`` as plain tensors."""
        return self.spectrogram_attr, self.token_attr

    # ----- persistence --------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write one ``.safetensors`` file (tensors plus JSON metadata, exact round trip).

        Raises:
            FileExistsError: if ``path`` exists and ``overwrite`` is False.
        """
        from safetensors.torch import save_file

        target = Path(path)
        if target.suffix != ".safetensors":
            target = target.with_name(target.name + ".safetensors")
        refuse_overwrite(target, overwrite)
        tensors = {
            "spectrogram_attr": self.spectrogram_attr.detach().cpu().contiguous(),
            "target_log_probs": self.target_log_probs.detach().cpu().contiguous(),
        }
        for name in ("token_attr", *_UNCERTAINTY):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.detach().cpu().contiguous()
        fields = {
            "target_ids": self.target_ids,
            "tokens": self.tokens,
            "decoder_input_ids": self.decoder_input_ids,
            "decoder_input_tokens": self.decoder_input_tokens,
            "num_prompt": self.num_prompt,
            "text": self.text,
            "metadata": self.metadata,
        }
        with atomic_write(target) as temporary:
            save_file(
                tensors,
                str(temporary),
                metadata={
                    "format": _FORMAT,
                    "format_version": str(_FORMAT_VERSION),
                    "fields": json.dumps(fields, ensure_ascii=False),
                },
            )
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> SPESResult:
        """Read a file written by :meth:`save` (no pickle)."""
        from safetensors import safe_open

        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist")
        with safe_open(str(source), framework="pt") as handle:
            header = handle.metadata() or {}
            if header.get("format") != _FORMAT:
                raise InputError(f"{source} is not a captum-spes result file")
            version = int(header.get("format_version", "0"))
            if version > _FORMAT_VERSION:
                raise InputError(
                    f"{source} has format version {version}; this captum-spes reads up to "
                    f"{_FORMAT_VERSION}: upgrade captum-spes"
                )
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        fields = json.loads(header["fields"])
        return cls(
            spectrogram_attr=tensors["spectrogram_attr"],
            token_attr=tensors.get("token_attr"),
            target_log_probs=tensors["target_log_probs"],
            **{name: tensors.get(name) for name in _UNCERTAINTY},
            **fields,
        )

    def __repr__(self) -> str:
        token_shape = None if self.token_attr is None else tuple(self.token_attr.shape)
        return (
            f"SPESResult(text={self.text!r}, spectrogram_attr={tuple(self.spectrogram_attr.shape)}, "
            f"token_attr={token_shape}, n_masks={self.metadata.get('n_masks')})"
        )
