#!/usr/bin/env python3
r"""Coarse-to-fine SPES: spend the masks where the effect is.

With fewer masks than segments, every segment's estimate is mostly noise: the published
design (about 1 500 SLIC segments per level for a 3 s clip) needs its 20 000 masks. This
estimator chooses its own design in two stages:

1. **Coarse**: the segments of the mask family's finest level (the *atoms*, e.g. the
   published SLIC superpixels) are grouped into ``round(n_coarse / masks_per_cell)`` coarse
   cells (SLIC superpixels of the same image, or a grid of mel bands times time slices; each
   atom goes to the cell holding most of it), and ``n_coarse`` masks occlude cells
   independently with probability ``p``. Unknowns matched to the budget give every cell a
   precise estimate; cells must still be finer in time than words (:meth:`CoarseToFine.fit_to_speech`).
   The coarse masks can be split over ``coarse_partitions`` partitions shifted in time by
   fractions of a cell (the default below ``refine_from`` masks, where the coarse stage is all
   there is): an element's value is the mean effect of its cells, so the map is resolved to
   the partitions' intersections with the noise of one partition's cell.
2. **Refine**: the coarse units where the tokens' effects are (each token's best cells, or
   with shifted partitions their intersections, in turn by the stage-1 z statistic) are split
   back into their atoms, as many as
   ``n_refine / masks_per_atom``; ``n_refine`` masks occlude those atoms independently with
   probability ``p`` and keep everything else clean (``outside="keep"``), so the rest of the
   utterance adds no variance to the fine estimates.

The map is the **effect of the coarse cell**: the increase in mean impact when the element's
cell is occluded (occluded minus kept means, as Welch's test compares them), the same value
over the cell. Inside a refined cell the value varies with its atoms: each atom's stage-2
effect minus the cell's mean atom effect, brought to the stage-1 scale (the token's stage-1
effect of the refined cells over its stage-2 effect of their atoms, clipped at 0) — so the
cell's mean value stays its stage-1 effect, the precise cell effect says where the map is high
and the detail says where inside the cell it is. (Weighting the detail by the cell size instead,
``detail_weight="cell"``, lets one noisy atom outrank whole cells; dividing every cell by its
size, an effect density, ranks small noisy cells first: both were less stable and pointed worse
in our study, docs/results.md.) Its units are the refined atoms and the
unrefined cells: z statistics come from the stage that estimated each unit (stage 2 uses data
independent of the selection); standard errors are conditional on the scale. When the budget is
below ``refine_from`` masks, all of it goes to the coarse stage; with shifted partitions the
units are their intersections, and a unit's z is its mean cell effect over that mean's standard
error (the partitions' masks are disjoint, so their cell effects are independent): evidence that
the cells around the unit raise the impact, a test of the smoothed map, not of the unit alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from captum_spes._core.coarse_cells import coarse_labels, nest, shift_offsets
from captum_spes._core.estimators import (
    Estimate,
    Estimator,
    MaskStage,
    ReferenceEstimator,
    register_estimator,
    units_of,
)
from captum_spes._core.regression import GramSums, boundary_laplacian
from captum_spes.errors import InputError
from captum_spes.masks import MaskLevel, check_time_spacing

if TYPE_CHECKING:
    from captum_spes._core.utterance import Utterance

__all__ = [
    "CoarseToFine",
    "MIN_SLIC_CELLS_PER_SECOND",
    "MIN_TIME_SLICES_PER_SECOND",
    "NARROW_TIME_SPACING",
    "MIN_NARROW_SLIC_CELLS_PER_SECOND",
    "COARSE_PARTITIONS",
]

OUTSIDE = ("keep", "coarse")
STATISTICS = ("effect", "standard_error", "z", "occluded")
DETAIL = ("shrunk", "raw")
DETAIL_WEIGHTS = ("atom", "cell")
COARSE_FITS = ("difference", "regression", "smooth")

#: Coarse cells must be finer in time than words, or the map's peak straddles them. Measured
#: (docs/results.md section 10, 500 masks): square SLIC cells pointed at 0.95 with 38-42 cells
#: per second (3 s) and at 0.71-0.73 with 17-24 (5-7 s); on a 26.7 s clip 1.9 per second
#: pointed at 0.25.
MIN_SLIC_CELLS_PER_SECOND = 30.0
#: SLIC cells narrowed in time (``time_spacing`` this or more): taller in frequency, still
#: following the spectrogram's edges. On the same 5-7 s clips and budget (117-131 cells, 17.6 to
#: 23.6 per second) they pointed at 0.97, 0.88 and 0.92, with a per-token seed-to-seed top-5 %
#: overlap of 0.62-0.69 ...
NARROW_TIME_SPACING = 8.0
#: ... down to this many cells per second (the measured range: 7.3 s of speech at 500 masks).
MIN_NARROW_SLIC_CELLS_PER_SECOND = 17.0
#: ... and a grid of bands this many time slices per second. Measured with 2 bands at 500 masks
#: (62 slices): 11.8, 10.3 and 8.8 per second (5.3, 6.1, 7.1 s) pointed at 0.91, 0.83 and 0.80.
MIN_TIME_SLICES_PER_SECOND = 8.0
#: Shifted coarse partitions for budgets below ``refine_from`` (``coarse_partitions=None``).
#: Measured at 500 masks on the six bundled clips under 8 s (docs/results.md, "Shifted coarse
#: partitions"): the pointing game rose from 0.88-1.00 to 0.94-1.00 (librivox_0920: 0.88 to
#: 0.96; 2 partitions: 0.90) with a per-token seed-to-seed top-5 % overlap of 0.62-0.72.
COARSE_PARTITIONS = 4


class CoarseToFine(Estimator):
    r"""Coarse cells matched to the budget, then the cells with an effect at the family's
    resolution (see the module docstring). The map is the coarse cell's effect (occluded
    minus kept mean impact), varying inside refined cells with their atoms.

    Args:
        coarse_fraction (float): share of the masks spent on the coarse stage when the
            budget allows a refine stage. Default: 0.25
        masks_per_cell (float): coarse-stage masks per coarse cell (sets the number of
            cells). Default: 4.0
        masks_per_atom (float): refine-stage masks per refined atom (sets how much is
            refined). Default: 2.0
        refine_from (int): smallest budget that gets a refine stage; below it every mask
            goes to the coarse stage. Default: 1000
        outside (str): in the refine stage, ``"keep"`` leaves the unrefined cells clean;
            ``"coarse"`` keeps occluding them with probability ``p`` (the context of stage 1).
            Default: "keep"
        detail (str): ``"shrunk"`` keeps a refined cell's within-cell detail as far as it
            stands out of its noise (:func:`shrinkage`, per token and cell); ``"raw"`` keeps
            all of it. Default: "shrunk"
        detail_weight (str): ``"atom"``: an atom's detail is its own effect minus its cell's
            mean atom effect, so atoms rank inside their cell and the stage-1 cell effect says
            where the map is high; ``"cell"``: the atom's effect per element times the mean
            cell size, so one strong atom can outrank whole cells (noisier: less stable and
            a worse pointing game in our study). Default: "atom"
        frequency_bands (int, optional): ``None``: the coarse cells are SLIC superpixels of
            the spectrogram; an int ``B``: a grid of ``B`` equal mel bands times as many equal
            time slices as the cells allow (each atom in the grid cell holding most of it), so
            the cells are finer in time than square ones of the same area: a word's evidence
            is contiguous in time and spread over frequency. On 5-7 s clips at 500 masks,
            ``2`` halved the time width of SLIC's cells and raised the pointing game from
            0.71-0.73 to 0.80-0.91, but SLIC's cells, which follow the spectrogram's edges,
            kept the better deletion AUC (docs/results.md section 10). Default: None
        time_spacing (float): for SLIC cells, their distance per frame relative to per mel
            bin (:class:`~captum_spes.masks.SLICMasks`): above 1 the cells are narrower in time
            and taller in frequency for the same count, and still follow the spectrogram's
            edges. ``estimator=None`` narrows them (:data:`NARROW_TIME_SPACING`) where square
            cells would be wider than words (:meth:`fit_to_speech`). Default: 1.0
        coarse_partitions (int, optional): ``K`` coarse partitions of the same cell count,
            each shifted in time by ``1 / K`` of the median cell width (SLIC of the spectrogram padded at its
            start, or the grid moved); the coarse masks are split among them. An element's
            value is the mean effect of its ``K`` cells and its standard error theirs over
            ``K``: the noise of one partition's cell with the same masks, at the resolution of
            the partitions' intersections (a smoothed map, like random shifts of RISE's grid).
            With a refine stage, the intersections are the coarse units that get refined
            (a one-atom intersection too: its own estimate instead of the smoothed mean).
            None: :data:`COARSE_PARTITIONS` below ``refine_from`` (at most
            ``n_masks // 2``), 1 with a refine stage (measured: docs/results.md, "Shifted
            coarse partitions"). Default: None
        coarse_fit (str): a coarse cell's effect, ``"difference"``: occluded minus kept mean
            impact (Welch's z); ``"regression"``: least squares of the impact on all the
            partition's cell indicators (:class:`~captum_spes._core.regression.GramSums`, a
            ``(cells, cells)`` Gram matrix per partition), the cell's effect with the other
            cells held fixed, so their share of the impact's variance leaves its noise. Needs
            more masks per partition than cells plus one (``masks_per_cell`` above 1 times
            ``coarse_partitions``); ``"smooth"``: penalised least squares of the impact on the
            coarse map's units (the cells, or the shifted partitions' intersections), all
            partitions' masks in one fit, with neighbouring units' effect densities pulled
            together (:meth:`~captum_spes._core.regression.GramSums.fit_smooth`, strength by
            generalised cross-validation per token), so there may be more units than masks;
            a unit's value is its density times a mean cell's size, and its standard error
            leaves out the smoothing's bias. Default: "difference"
    """

    name = "coarse_to_fine"

    def __init__(
        self,
        coarse_fraction: float = 0.25,
        masks_per_cell: float = 4.0,
        masks_per_atom: float = 2.0,
        refine_from: int = 1000,
        outside: str = "keep",
        detail: str = "shrunk",
        detail_weight: str = "atom",
        frequency_bands: int | None = None,
        time_spacing: float = 1.0,
        coarse_partitions: int | None = None,
        coarse_fit: str = "difference",
    ) -> None:
        super().__init__()
        if (
            isinstance(coarse_fraction, bool)
            or not isinstance(coarse_fraction, (int, float))
            or not 0 < coarse_fraction < 1
        ):
            raise InputError(f"coarse_fraction must be in (0, 1), e.g. 0.25; got {coarse_fraction!r}")
        for name, value in (("masks_per_cell", masks_per_cell), ("masks_per_atom", masks_per_atom)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"{name} must be a positive number, got {value!r}")
        if isinstance(refine_from, bool) or not isinstance(refine_from, int) or refine_from < 2:
            raise InputError(f"refine_from must be an int >= 2 (a budget in masks), got {refine_from!r}")
        if outside not in OUTSIDE:
            raise InputError(f"outside must be one of {OUTSIDE}, got {outside!r}")
        if detail not in DETAIL:
            raise InputError(f"detail must be one of {DETAIL}, got {detail!r}")
        if detail_weight not in DETAIL_WEIGHTS:
            raise InputError(f"detail_weight must be one of {DETAIL_WEIGHTS}, got {detail_weight!r}")
        if coarse_fit not in COARSE_FITS:
            raise InputError(f"coarse_fit must be one of {COARSE_FITS}, got {coarse_fit!r}")
        if frequency_bands is not None and (
            isinstance(frequency_bands, bool) or not isinstance(frequency_bands, int) or frequency_bands < 1
        ):
            raise InputError(f"frequency_bands must be None (SLIC cells) or an int >= 1, got {frequency_bands!r}")
        time_spacing = check_time_spacing(time_spacing)
        if time_spacing != 1 and frequency_bands is not None:
            raise InputError("time_spacing shapes SLIC cells: pass frequency_bands=None with it, or leave it at 1.0")
        self.coarse_fraction = float(coarse_fraction)
        self.masks_per_cell = float(masks_per_cell)
        self.masks_per_atom = float(masks_per_atom)
        self.refine_from = refine_from
        self.outside = outside
        self.detail = detail
        self.detail_weight = detail_weight
        if coarse_partitions is not None and (
            isinstance(coarse_partitions, bool) or not isinstance(coarse_partitions, int) or coarse_partitions < 1
        ):
            raise InputError(
                f"coarse_partitions must be None or an int >= 1 (1 = one partition), got {coarse_partitions!r}"
            )
        self.frequency_bands = frequency_bands
        self.time_spacing = time_spacing
        self.coarse_partitions = coarse_partitions
        self.coarse_fit = coarse_fit

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "coarse_fraction": self.coarse_fraction,
            "masks_per_cell": self.masks_per_cell,
            "masks_per_atom": self.masks_per_atom,
            "refine_from": self.refine_from,
            "outside": self.outside,
            "detail": self.detail,
            "detail_weight": self.detail_weight,
            "frequency_bands": self.frequency_bands,
            "time_spacing": self.time_spacing,
            "coarse_partitions": self.coarse_partitions,
            "coarse_fit": self.coarse_fit,
        }

    def for_tokens(self) -> Estimator:
        # The token map has a handful of columns: the published estimator suits it.
        return ReferenceEstimator()

    # ----- sums ---------------------------------------------------------------------
    def _allocate(self) -> None:
        # The stages, not the family's levels, are this estimator's levels.
        self.sums = ReferenceEstimator().bind(self.num_targets, [], self.device)
        self.grams: dict[int, GramSums] = {}
        self.unit_gram: GramSums | None = None
        self.design: dict[str, Any] = {}

    def add(self, level: int, scores: Tensor, occluded: Tensor) -> None:
        self.sums.add(level, scores, occluded)
        if level in self.grams:
            self.grams[level].add(scores, occluded)
        if self.unit_gram is not None and level < len(self._partition_cells):
            # Each unit lies in one cell of this partition: its indicator is that cell's.
            self.unit_gram.add(scores, occluded[:, self._unit_cells[level]])

    def merge(self, other: Estimator) -> None:
        raise InputError("coarse_to_fine draws its stages from its own results, so it cannot be split into halves")

    def masks_seen(self) -> int:
        return self.sums.masks_seen()

    # ----- design -------------------------------------------------------------------
    def coarse_masks(self, n_masks: int) -> int:
        """Masks of the coarse stage for a budget of ``n_masks``."""
        return n_masks if n_masks < self.refine_from else max(2, math.ceil(self.coarse_fraction * n_masks))

    def coarse_cells(self, n_masks: int) -> int:
        """Coarse cells requested for a budget of ``n_masks`` (SLIC may return a few more or fewer)."""
        return max(2, round(self.coarse_masks(n_masks) / self.masks_per_cell))

    def partitions(self, n_masks: int) -> int:
        """Coarse partitions for a budget of ``n_masks``: ``coarse_partitions``, or for None
        :data:`COARSE_PARTITIONS` below ``refine_from`` (fewer where that would leave a
        partition under 2 masks, too few for a standard error) and 1 from it."""
        if self.coarse_partitions is not None:
            return self.coarse_partitions
        return max(1, min(COARSE_PARTITIONS, n_masks // 2)) if n_masks < self.refine_from else 1

    def resolves_words(self, n_masks: int, seconds: float) -> bool:
        """Whether ``n_masks`` give coarse cells fine enough in time for ``seconds`` of speech:
        at least :data:`MIN_SLIC_CELLS_PER_SECOND` square SLIC cells per second,
        :data:`MIN_NARROW_SLIC_CELLS_PER_SECOND` SLIC cells narrowed in time (``time_spacing``
        at least :data:`NARROW_TIME_SPACING`; spacings between 1 and that count as square),
        :data:`MIN_TIME_SLICES_PER_SECOND` time slices per second for a grid of bands (all
        measured: docs/results.md section 10)."""
        cells = self.coarse_cells(n_masks)
        if self.frequency_bands is not None:
            return cells / self.frequency_bands >= MIN_TIME_SLICES_PER_SECOND * seconds
        narrow = self.time_spacing >= NARROW_TIME_SPACING
        return cells >= (MIN_NARROW_SLIC_CELLS_PER_SECOND if narrow else MIN_SLIC_CELLS_PER_SECOND) * seconds

    def fit_to_speech(self, n_masks: int, seconds: float) -> CoarseToFine | None:
        """This design if its cells resolve words in ``seconds`` of speech (:meth:`resolves_words`);
        for square SLIC cells that do not, the same settings with cells narrowed in time
        (``time_spacing=NARROW_TIME_SPACING``) if those do; else None (``estimator=None`` then
        uses the reference)."""
        if self.resolves_words(n_masks, seconds):
            return self
        if self.frequency_bands is None and self.time_spacing < NARROW_TIME_SPACING:
            narrowed = copy.copy(self)  # unbound: only settings to copy
            narrowed.time_spacing = NARROW_TIME_SPACING
            if narrowed.resolves_words(n_masks, seconds):
                return narrowed
        return None

    def plan(self, utterance: Utterance, levels: Sequence[MaskLevel], n_masks: int, p: float) -> Iterator[MaskStage]:
        return self._stages(utterance, levels, n_masks, p)

    def _stages(self, utterance: Utterance, levels: Sequence[MaskLevel], n_masks: int, p: float) -> Iterator[MaskStage]:
        # The finest level's segments: the intersection of nearly identical SLIC levels (the
        # published ones return 1489 / 1489 / 1486 segments on a 3 s clip) is mostly slivers.
        finest = max(levels, key=lambda level: level.num_segments)
        atoms, _ = units_of([finest.labels])
        num_atoms = int(atoms.max()) + 1
        n_coarse = self.coarse_masks(n_masks)
        partitions = self.partitions(n_masks)
        if n_coarse < 2 * partitions:
            raise InputError(f"coarse_partitions={partitions} needs at least {2 * partitions} masks, got {n_coarse}")
        cells_wanted = min(num_atoms, self.coarse_cells(n_masks))
        cell_of_atom = nest(atoms, coarse_labels(utterance, cells_wanted, self.frequency_bands, self.time_spacing))
        cells = cell_of_atom[atoms]
        offsets = shift_offsets(cells, partitions)
        partition_cells = [cells] + [
            nest(atoms, coarse_labels(utterance, cells_wanted, self.frequency_bands, self.time_spacing, offset))[atoms]
            for offset in offsets[1:]
        ]
        num_cells = [int(c.max()) + 1 for c in partition_cells]
        self.design = {
            "atoms": num_atoms,
            "cells_requested": cells_wanted,
            "cells": num_cells[0],
            "coarse_masks": n_coarse,
            "refine_masks": n_masks - n_coarse,
            "partitions": partitions,
        }
        if partitions > 1:
            self.design.update(partition_cells=num_cells, partition_offsets=offsets)
        # Set before yielding: a caller may stop after the coarse stage and still finalize.
        self._atoms, self._cells, self._cell_of_atom = atoms, cells, cell_of_atom
        self._partition_cells = partition_cells
        shares = [n_coarse // partitions + (1 if k < n_coarse % partitions else 0) for k in range(partitions)]
        if self.coarse_fit == "regression" and any(n <= c + 1 for n, c in zip(shares, num_cells)):
            raise InputError(
                f"coarse_fit='regression' fits {max(num_cells)} cells on {min(shares)} masks per partition and "
                f"needs more masks than cells plus one: with {partitions} partition(s), pass coarse_partitions=1 "
                f"or raise masks_per_cell above {partitions} (it is {self.masks_per_cell:g}), "
                "or use coarse_fit='difference'"
            )
        if self.coarse_fit == "smooth":
            self._prepare_smooth_fit(partition_cells, num_cells[0])
        for k, (labels, count, share) in enumerate(zip(partition_cells, num_cells, shares)):
            self.sums.add_level(count)
            if self.coarse_fit == "regression":
                self.grams[k] = GramSums(self.num_targets, count, self.device)
            name = "coarse" if partitions == 1 else f"coarse {k + 1}/{partitions}"
            yield MaskStage(k, labels, count, share, name=name)
        if n_masks == n_coarse:
            return
        # The refine stage works on the coarse map's units: one partition's cells, or the
        # partitions' intersections (unions of atoms either way, so atoms nest exactly).
        coarse, coarse_units = self._coarse_statistics()
        if partitions > 1:
            self._cell_of_atom = nest(atoms, coarse_units)
            self.design["coarse_units"] = int(self._cell_of_atom.max()) + 1
        n_refine = n_masks - n_coarse
        budget = max(1, int(n_refine / self.masks_per_atom))
        # A one-atom cell gains nothing from refining; a one-atom intersection does: its own
        # estimate instead of the mean over the cells around it.
        refined = self._select(coarse["z"], self._cell_of_atom, budget, smallest=1 if partitions > 1 else 2)
        units, probabilities, num_refined_atoms = self._refine_units(refined, p)
        self.design.update(refined_cells=int(refined.sum()), refined_atoms=num_refined_atoms)
        self.sums.add_level(int(probabilities.shape[0]))
        self._units, self._num_refined = units, num_refined_atoms
        yield MaskStage(partitions, units, int(probabilities.shape[0]), n_refine, probabilities, name="refine")

    def _prepare_smooth_fit(self, partition_cells: Sequence[Tensor], num_cells: int) -> None:
        """The coarse units (intersections of the partitions), their penalty and scales, and
        the Gram sums of their indicators for ``coarse_fit="smooth"``."""
        units, unit_cells = units_of(partition_cells)
        sizes = torch.bincount(units.reshape(-1)).to(torch.float64)
        self._smooth_units, self._unit_cells = units, unit_cells.to(self.device)
        self._smooth_penalty = boundary_laplacian(units).to(self.device)
        # Regressors scaled by size over a mean cell's: the coefficient is a density, in cells.
        self._smooth_scale = (sizes / (units.numel() / num_cells)).to(self.device)
        self.unit_gram = GramSums(self.num_targets, int(sizes.numel()), self.device)

    def _smooth_statistics(self) -> tuple[dict[str, Tensor], Tensor]:
        """The coarse map's :data:`STATISTICS` per unit from the penalised fit, and its units."""
        fit = self.unit_gram.fit_smooth(self._smooth_penalty, self._smooth_scale)
        self.design["coarse_effective_units"] = [round(float(v), 1) for v in fit["effective_units"]]
        occluded = sum(self.sums.level_statistics(k)["occluded"][cells] for k, cells in enumerate(self._unit_cells))
        statistics = {"effect": fit["effect"], "standard_error": fit["standard_error"], "z": fit["z"]}
        return {**statistics, "occluded": occluded}, self._smooth_units.to(self.device)

    def _select(self, z: Tensor, cell_of_atom: Tensor, budget: int, smallest: int = 2) -> Tensor:
        """Refined coarse units: each token's units of at least ``smallest`` atoms in order of
        its stage-1 z (``(num_tokens, num_cells)``), in turn, while their atoms fit the budget.
        Returns a bool ``(num_cells,)``."""
        z = z.cpu()
        z = torch.nan_to_num(z, nan=-float("inf"))
        rank = z.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = the token's best cell
        best_rank = rank.amin(dim=0)
        best_z = z.amax(dim=0)
        order = sorted(range(z.shape[1]), key=lambda c: (int(best_rank[c]), -float(best_z[c])))
        atoms_per_cell = torch.bincount(cell_of_atom, minlength=z.shape[1])
        refined = torch.zeros(z.shape[1], dtype=torch.bool)
        used = 0
        for cell in order:
            size = int(atoms_per_cell[cell])
            if size >= smallest and used + size <= budget:
                refined[cell] = True
                used += size
        return refined

    def _refine_units(self, refined: Tensor, p: float) -> tuple[Tensor, Tensor, int]:
        """Stage-2 units: the atoms of refined cells first (ids ``0 .. R - 1``), then one unit
        per unrefined cell; their occlusion probabilities (0 for kept cells)."""
        atom_refined = refined[self._cell_of_atom]
        num_refined = int(atom_refined.sum())
        unit_of_atom = torch.empty_like(self._cell_of_atom)
        unit_of_atom[atom_refined] = torch.arange(num_refined)
        kept_cells = (~refined).nonzero()[:, 0]
        unit_of_cell = torch.full((refined.shape[0],), -1, dtype=torch.long)
        unit_of_cell[kept_cells] = num_refined + torch.arange(kept_cells.numel())
        unit_of_atom[~atom_refined] = unit_of_cell[self._cell_of_atom[~atom_refined]]
        num_units = num_refined + kept_cells.numel()
        probabilities = torch.zeros(num_units, dtype=torch.float64)
        probabilities[:num_refined] = p
        if self.outside == "coarse":
            probabilities[num_refined:] = p
        return unit_of_atom[self._atoms], probabilities, num_refined

    # ----- estimate -----------------------------------------------------------------
    def finalize(self, labels: Sequence[Tensor]) -> Estimate:
        if not self.design:
            raise RuntimeError("coarse_to_fine has no design yet: SPES runs plan() before finalize()")
        if self._refined():
            values, standard_error, z, occluded = self._combine()
            units = self._units.to(self.device)
        else:
            coarse, units = self._coarse_statistics()
            values, standard_error, z, occluded = (coarse[key] for key in STATISTICS)
        flat = units.reshape(-1)
        attribution = torch.nan_to_num(values, nan=0.0).to(torch.float32)[:, flat].reshape(-1, *units.shape)
        return Estimate(
            attribution=attribution,
            units=units,
            standard_error=standard_error.to(torch.float32),
            z=z.to(torch.float32),
            occluded=occluded,
            info={
                **self.config(),
                **self.design,
                "map": self._map_description(),
            },
        )

    def _refined(self) -> bool:
        """Whether the design has a refine stage (a level after the coarse partitions')."""
        return len(self.sums.segments_per_level) > len(self._partition_cells)

    def _map_description(self) -> str:
        if len(self._partition_cells) > 1:
            description = "mean over shifted coarse partitions of the element's cell effect"
        else:
            description = "coarse cell's effect"
        if self.coarse_fit == "smooth":
            description = (
                "coarse unit's effect density times a mean cell's size (penalised least squares, the other units "
                "held fixed and neighbours pulled together; smoothing by generalised cross-validation)"
            )
        elif self.coarse_fit == "regression":
            description += " (least-squares effect, the other cells held fixed)"
        else:
            description += " (occluded minus kept mean impact)"
        return description + (", varying with refined units' atoms" if self._refined() else "")

    def _coarse_statistics(self) -> tuple[dict[str, Tensor], Tensor]:
        """The coarse map's :data:`STATISTICS` per unit (``(num_tokens, num_units)``; occlusion
        counts ``(num_units,)``) and its units ``(n_mels, num_frames)``: one partition's cells,
        or the mean over shifted partitions on their intersections."""
        if self.coarse_fit == "smooth":
            return self._smooth_statistics()
        if len(self._partition_cells) == 1:
            return self._cell_statistics(0), self._cells.to(self.device)
        values, standard_error, z, occluded, units = self._average_partitions()
        return dict(zip(STATISTICS, (values, standard_error, z, occluded))), units

    def _cell_statistics(self, partition: int) -> dict[str, Tensor]:
        """One coarse partition's :data:`STATISTICS` per cell (``(num_tokens, num_cells)``)."""
        statistics = self.sums.level_statistics(partition)
        if partition in self.grams:
            statistics.update(self.grams[partition].fit())
        return {key: statistics[key] for key in STATISTICS}

    def _average_partitions(self) -> tuple[Tensor, ...]:
        """Unit values, standard errors, z, occlusion counts and the unit of every element of
        the mean over shifted partitions; units are the partitions' intersections."""
        partition_cells = [c.to(self.device) for c in self._partition_cells]
        units, unit_cells = units_of(partition_cells)  # unit_cells: (K, U)
        statistics = [self._cell_statistics(k) for k in range(len(partition_cells))]
        effects = torch.stack([st["effect"][:, unit_cells[k]] for k, st in enumerate(statistics)])
        variances = torch.stack([st["standard_error"][:, unit_cells[k]].square() for k, st in enumerate(statistics)])
        occluded = sum(st["occluded"][unit_cells[k]] for k, st in enumerate(statistics))
        count = effects.shape[0]
        # Partitions use disjoint masks: their cell effects are independent estimates.
        values = effects.mean(dim=0)
        standard_error = variances.sum(dim=0).sqrt() / count
        z = values / standard_error
        z = torch.where((standard_error == 0) & (values == 0), torch.zeros_like(z), z)
        return values, standard_error, z, occluded, units

    def _combine(self) -> tuple[Tensor, ...]:
        """Unit values, standard errors, z and occlusion counts of the two-stage map; its
        "cells" are the coarse map's units (:meth:`_coarse_statistics`)."""
        first, cells = self._coarse_statistics()
        area_cell = torch.bincount(cells.reshape(-1), minlength=first["effect"].shape[1]).to(torch.float64)
        second = self.sums.level_statistics(len(self._partition_cells))
        refined = self._num_refined
        units = self._units.to(self.device)
        area_unit = torch.bincount(units.reshape(-1), minlength=second["effect"].shape[1]).to(torch.float64)
        # The cell of every refined atom (units 0 .. R - 1) and of every kept unit (R ..).
        cell_of_unit = torch.zeros(area_unit.shape[0], dtype=torch.long, device=self.device)
        cell_of_unit.scatter_(0, units.reshape(-1), cells.reshape(-1))
        atom_cells = cell_of_unit[:refined]
        atom_effect = second["effect"][:, :refined]
        cell_effect = first["effect"]
        cell_total = torch.zeros_like(cell_effect).index_add_(1, atom_cells, atom_effect)
        refined_cells = torch.unique(atom_cells)
        # Stage 2 ran in another context (the rest of the utterance clean): its effects are
        # brought to the stage-1 scale, per token, over all refined cells together.
        stage1, stage2 = cell_effect[:, refined_cells].sum(dim=1), atom_effect.sum(dim=1)
        ratio = stage1 / torch.where(stage2 != 0, stage2, torch.ones_like(stage2))
        scale = torch.where(stage2 != 0, ratio, torch.zeros_like(ratio)).clamp_min(0)[:, None]
        if self.detail_weight == "cell":
            # Per element of the atom, relative to the cell's mean, times the mean cell size: a
            # constant, so the same atom effect weighs the same in a small cell as in a large one.
            size = area_cell.mean() / area_unit[:refined]
            detail = size * atom_effect - (area_cell.mean() / area_cell[atom_cells]) * cell_total[:, atom_cells]
        else:
            # The atom's own effect relative to its cell's mean atom: atoms rank inside their
            # cell, and the cell's precise stage-1 effect says where the map is high.
            size = torch.ones_like(area_unit[:refined])
            atoms_in_cell = torch.bincount(atom_cells, minlength=cell_effect.shape[1]).clamp_min(1)
            detail = atom_effect - (cell_total / atoms_in_cell)[:, atom_cells]
        detail = scale * detail
        detail_se = scale * size * second["standard_error"][:, :refined]
        if self.detail == "shrunk":
            detail = detail * shrinkage(detail, detail_se, atom_cells, cell_effect.shape[1])
        kept_cells = cell_of_unit[refined:]
        values = torch.cat([cell_effect[:, atom_cells] + detail, cell_effect[:, kept_cells]], dim=1)
        standard_error = torch.cat([detail_se, first["standard_error"][:, kept_cells]], dim=1)
        z = torch.cat([second["z"][:, :refined], first["z"][:, kept_cells]], dim=1)
        occluded = torch.cat([second["occluded"][:refined], first["occluded"][kept_cells]])
        return values, standard_error, z, occluded


def shrinkage(detail: Tensor, standard_error: Tensor, cells: Tensor, num_cells: int) -> Tensor:
    r"""Empirical-Bayes weights that keep a refined cell's detail only as far as it stands out
    of its own noise: per token and cell, ``lambda = tau^2 / (tau^2 + se^2)`` with the detail's
    variance beyond noise ``tau^2 = max(0, mean(detail^2) - mean(se^2))`` over the cell's atoms
    (James-Stein-type shrinkage toward the cell's value).

    Args:
        detail, standard_error (Tensor): ``(num_tokens, num_atoms)``; NaN errors shrink fully.
        cells (Tensor): long ``(num_atoms,)``, each atom's cell.
        num_cells (int): cells in all.

    Returns:
        *Tensor* ``(num_tokens, num_atoms)`` in [0, 1].
    """
    variance = torch.nan_to_num(standard_error.square(), nan=float("inf"))
    finite = torch.isfinite(variance)
    signal = torch.zeros(detail.shape[0], num_cells, dtype=detail.dtype, device=detail.device)
    noise = torch.zeros_like(signal)
    count = torch.zeros(num_cells, dtype=detail.dtype, device=detail.device).index_add_(
        0, cells, torch.ones_like(cells, dtype=detail.dtype)
    )
    signal.index_add_(1, cells, torch.where(finite, detail.square(), torch.zeros_like(detail)))
    noise.index_add_(1, cells, torch.where(finite, variance, torch.zeros_like(variance)))
    tau = ((signal - noise) / count.clamp_min(1)).clamp_min(0)[:, cells]
    return torch.where(finite & (tau > 0), tau / (tau + variance), torch.zeros_like(detail))


register_estimator(CoarseToFine.name, CoarseToFine)
