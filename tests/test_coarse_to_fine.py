"""Coarse-to-fine SPES: the design, the two-stage map by hand, and known answers end to end."""

import pytest
import torch
from helpers import REGIONS, ToySpeechModel, tiny_whisper, toy_features, whisper_features

from captum_spes import SPES, CoarseToFine, CustomMasks, InputError, SpeechSeq2SeqWrapper
from captum_spes._core.coarse_cells import coarse_labels
from captum_spes._core.coarse_to_fine import COARSE_PARTITIONS, shrinkage
from captum_spes._core.utterance import Utterance
from captum_spes.adapters import InputLayout


def test_shrinkage_by_hand():
    # Cell 0: details +-2 with errors 1: variance beyond noise 4 - 1 = 3, weight 3 / (3 + 1).
    # Cell 1: details +-0.5 with errors 1: no variance beyond noise, weight 0. A NaN error: 0.
    detail = torch.tensor([[2.0, -2.0, 0.5, -0.5, 3.0]], dtype=torch.float64)
    error = torch.tensor([[1.0, 1.0, 1.0, 1.0, float("nan")]], dtype=torch.float64)
    weights = shrinkage(detail, error, torch.tensor([0, 0, 1, 1, 2]), 3)
    torch.testing.assert_close(weights, torch.tensor([[0.75, 0.75, 0.0, 0.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coarse_fraction": 1.0}, "coarse_fraction must be in"),
        ({"masks_per_cell": 0}, "masks_per_cell must be a positive number"),
        ({"refine_from": 1}, "refine_from must be an int"),
        ({"outside": "noise"}, "outside must be one of"),
        ({"coarse_fit": "lasso"}, "coarse_fit must be one of"),
        ({"detail": "smooth"}, "detail must be one of"),
        ({"detail_weight": "area"}, "detail_weight must be one of"),
        ({"frequency_bands": 0}, "frequency_bands must be None"),
        ({"frequency_bands": 2.0}, "frequency_bands must be None"),
        ({"time_spacing": 0}, "time_spacing must be a number > 0"),
        ({"time_spacing": True}, "time_spacing must be a number > 0"),
        ({"time_spacing": 8.0, "frequency_bands": 2}, "time_spacing shapes SLIC cells"),
        ({"coarse_partitions": 0}, "coarse_partitions must be None or an int >= 1"),
        ({"coarse_partitions": 2.0}, "coarse_partitions must be None or an int >= 1"),
        ({"coarse_partitions": True}, "coarse_partitions must be None or an int >= 1"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(InputError, match=match):
        CoarseToFine(**kwargs)


def _utterance(n_frames=8):
    speech = torch.arange(4 * n_frames, dtype=torch.float32).reshape(1, 4, n_frames)
    return Utterance.prepare(speech, InputLayout("mel_first"))


def _levels(n_frames=8):
    # Atoms: 2-frame columns (4 mels each).
    return CustomMasks(torch.arange(n_frames)[None, :] // 2).segment(torch.zeros(4, n_frames))


@pytest.mark.parametrize(
    ("detail_weight", "refined_values", "atom_se"),
    [
        # Atom detail = atom effect - the cell's mean atom effect: atom 0: 2 - 1 = 1, atom 1: 0 - 1 = -1;
        # values 4 + 2 x 1 = 6 and 4 - 2 x 1 = 2. Standard error: scale 2 x sqrt(2).
        ("atom", [6.0, 2.0], 2 * 2**0.5),
        # Atom detail = (mean cell size / atom size) x atom effect - the cell's stage-2 total (both
        # cells hold 16 elements): atom 0: 2 x 2 - 2 = 2, atom 1: 2 x 0 - 2 = -2; values 4 + 2 x 2 = 8
        # and 4 - 2 x 2 = 0. Standard error: scale 2 x size ratio 2 x sqrt(2).
        ("cell", [8.0, 0.0], 2 * 2 * 2**0.5),
    ],
)
def test_two_stage_map_by_hand(monkeypatch, detail_weight, refined_values, atom_se):
    # 4 atoms (2-frame columns of 4 mels: 8 elements) in 2 cells (atoms 0-1, atoms 2-3: 16 elements).
    monkeypatch.setattr(
        "captum_spes._core.coarse_to_fine.coarse_labels",
        lambda utterance, num_cells, frequency_bands, time_spacing: (torch.arange(8)[None, :] // 4).expand(4, 8),
    )
    settings = dict(
        coarse_fraction=0.5,
        masks_per_cell=1.0,
        masks_per_atom=2.0,
        refine_from=4,
        detail="raw",
        detail_weight=detail_weight,
    )
    estimator = CoarseToFine(**settings).bind(1, [4], "cpu")
    stages = estimator.plan(_utterance(), _levels(), 8, 0.5)
    coarse = next(stages)
    assert coarse.name == "coarse" and coarse.num_segments == 2 and coarse.n_masks == 4
    # Stage 1. Cell 0: occluded {4, 6}, kept {1, 1}: effect 4, z = 4 / sqrt(2/2 + 0) = 4.
    # Cell 1: occluded {6, 1}, kept {4, 1}: effect 1, z = 1 / sqrt(12.5/2 + 4.5/2) = 0.34.
    estimator.add(0, torch.tensor([[4.0], [6.0], [1.0], [1.0]]), torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]]).bool())
    refine = next(stages)
    # Budget: 4 refine masks / 2 per atom = 2 atoms: cell 0 (the better) is refined, cell 1 kept.
    assert refine.name == "refine" and refine.n_masks == 4 and estimator.design["refined_cells"] == 1
    assert refine.probabilities.tolist() == [0.5, 0.5, 0.0]  # atoms 0, 1; kept cell 1 never occluded
    # Stage 2, a balanced design on atoms 0 and 1, impact 1 + 2 x0: atom 0 effect 3 - 1 = 2,
    # atom 1 effect 2 - 2 = 0.
    flags = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]]).bool()
    estimator.add(1, torch.tensor([[3.0], [3.0], [1.0], [1.0]]), flags)
    with pytest.raises(StopIteration):
        next(stages)
    estimate = estimator.finalize([coarse.labels, refine.labels])
    # Cell effects 4 and 1. Scale = stage-1 effect of the refined cell (4) over stage-2 effect of
    # its atoms (2) = 2; the refined cell's mean stays 4 (see the parameters).
    torch.testing.assert_close(estimate.attribution[0, 0, ::2], torch.tensor([*refined_values, 1.0, 1.0]))
    assert estimate.num_units == 3 and estimate.units[0].tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    # z: atom 0 from stage 2 (constant groups 3 vs 1: +inf), atom 1 0, cell 1 from stage 1.
    assert estimate.z[0, 0] == float("inf") and estimate.z[0, 1] == 0
    assert estimate.z[0, 2].item() == pytest.approx(1 / (8.5**0.5))
    # Standard errors: the refined atoms' in stage-1 units; atom 1's stage-2 groups {3, 1} and
    # {3, 1} have variance 2 each: sqrt(2/2 + 2/2) = sqrt(2).
    assert estimate.standard_error[0, 1].item() == pytest.approx(atom_se)
    assert estimate.info["refined_atoms"] == 2 and estimate.info["cells"] == 2


def test_frequency_band_cells_nest_single_element_atoms_exactly():
    labels = coarse_labels(_utterance(), 4, 2)
    # Through the design: single-element atoms nest exactly into the grid cells.
    elements = CustomMasks(torch.arange(32).reshape(4, 8)).segment(torch.zeros(4, 8))
    estimator = CoarseToFine(masks_per_cell=1.0, frequency_bands=2, coarse_partitions=1).bind(1, [32], "cpu")
    coarse = next(estimator.plan(_utterance(), elements, 4, 0.5))
    assert coarse.num_segments == 4 and coarse.labels.tolist() == labels.tolist()
    assert estimator.config()["frequency_bands"] == 2


def test_shifted_partitions_average_by_hand(monkeypatch):
    # 8 frames of 4 mels. Partition 1: cells of frames 0-3 and 4-7 (median width 4), so with 2
    # partitions the second is shifted by 2 frames: cells of frames 0-1, 2-5, 6-7.
    def cells(utterance, num_cells, frequency_bands, time_spacing, offset=0):
        frames = torch.arange(8)
        return ((frames + offset) // 4).expand(4, 8)

    monkeypatch.setattr("captum_spes._core.coarse_to_fine.coarse_labels", cells)
    estimator = CoarseToFine(masks_per_cell=2.0, coarse_partitions=2).bind(1, [4], "cpu")
    stages = estimator.plan(_utterance(), _levels(), 9, 0.5)
    first = next(stages)
    # 9 masks: 5 for the first partition, 4 for the second.
    assert (first.level, first.n_masks, first.num_segments, first.name) == (0, 5, 2, "coarse 1/2")
    # Cell 0: occluded {5, 3, 4}, kept {1, 1}: effect 4 - 1 = 3, se sqrt(1/3 + 0).
    estimator.add(
        0,
        torch.tensor([[5.0], [3.0], [4.0], [1.0], [1.0]]),
        torch.tensor([[1, 0], [1, 1], [1, 0], [0, 1], [0, 0]]).bool(),
    )
    second = next(stages)
    assert (second.level, second.n_masks, second.num_segments) == (1, 4, 3)
    assert second.labels[0].tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    # Partition 2, cell 1 (frames 2-5): occluded {6, 4}, kept {1, 3}: effect 5 - 2 = 3, se
    # sqrt(2/2 + 2/2) = sqrt(2). Cell 0 (frames 0-1): occluded {6, 1}, kept {4, 3}: effect 0.
    flags = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]]).bool()
    estimator.add(1, torch.tensor([[6.0], [4.0], [1.0], [3.0]]), flags)
    with pytest.raises(StopIteration):
        next(stages)
    estimate = estimator.finalize([first.labels, second.labels])
    # Units: the intersections, frames 0-1, 2-3, 4-5, 6-7.
    assert estimate.num_units == 4 and estimate.units[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # Frames 2-3: cell 0 of partition 1 (3) and cell 1 of partition 2 (3): mean 3, se
    # sqrt(1/3 + 2) / 2, z = 3 / se.
    assert estimate.attribution[0, 0, 2].item() == pytest.approx(3.0)
    se = (1 / 3 + 2) ** 0.5 / 2
    assert estimate.standard_error[0, 1].item() == pytest.approx(se, rel=1e-6)
    assert estimate.z[0, 1].item() == pytest.approx(3.0 / se, rel=1e-6)
    # Frames 0-1: (3 + 0) / 2.
    assert estimate.attribution[0, 0, 0].item() == pytest.approx(1.5)
    # Occlusions: frames 2-3 were occluded by 3 masks of partition 1 and 2 of partition 2.
    assert estimate.occluded[1].item() == 5
    assert estimate.info["partition_cells"] == [2, 3] and estimate.info["partition_offsets"] == [0, 2]


def test_default_partitions_are_shifted_only_without_a_refine_stage():
    default = CoarseToFine()
    assert default.partitions(999) == COARSE_PARTITIONS and default.partitions(1000) == 1
    assert CoarseToFine(refine_from=600).partitions(600) == 1
    assert default.partitions(5) == 2 and default.partitions(3) == 1  # at least 2 masks per partition
    assert (
        CoarseToFine(coarse_partitions=2).partitions(500) == 2
        and CoarseToFine(coarse_partitions=1).partitions(500) == 1
    )
    # Recorded: the setting in the config, what was used in the design.
    estimator = CoarseToFine(masks_per_cell=10).bind(1, [4], "cpu")
    stages = list(estimator.plan(_utterance(24), _levels(24), 40, 0.5))
    assert len(stages) == COARSE_PARTITIONS and sum(stage.n_masks for stage in stages) == 40
    assert estimator.config()["coarse_partitions"] is None and estimator.design["partitions"] == COARSE_PARTITIONS


def test_regression_refuses_a_partition_with_no_more_masks_than_cells():
    # 40 masks over 4 partitions of 2-4 cells fit (10 masks each); 5 masks for 3-6 cells do not.
    fits = CoarseToFine(masks_per_cell=10, coarse_fit="regression").bind(1, [4], "cpu")
    assert len(list(fits.plan(_utterance(24), _levels(24), 40, 0.5))) == COARSE_PARTITIONS
    too_many_cells = CoarseToFine(masks_per_cell=4, coarse_fit="regression").bind(1, [4], "cpu")
    with pytest.raises(InputError, match="on 5 masks per partition .* coarse_partitions=1 or raise masks_per_cell"):
        list(too_many_cells.plan(_utterance(24), _levels(24), 20, 0.5))


def test_regression_is_recorded_and_named_in_the_map_description():
    estimator = CoarseToFine(masks_per_cell=10, coarse_partitions=1, coarse_fit="regression").bind(1, [4], "cpu")
    list(estimator.plan(_utterance(24), _levels(24), 40, 0.5))
    assert estimator.config()["coarse_fit"] == "regression"
    assert "least-squares effect" in estimator._map_description()
    assert CoarseToFine().config()["coarse_fit"] == "difference"


def test_shifted_partitions_refuse_too_few_masks():
    with pytest.raises(InputError, match="coarse_partitions=3 needs at least 6 masks"):
        next(CoarseToFine(coarse_partitions=3).bind(1, [4], "cpu").plan(_utterance(), _levels(), 5, 0.5))


def test_shifted_partitions_with_a_refine_stage_by_hand(monkeypatch):
    # 8 one-frame atoms. Partition 1: cells A (frames 0-3), B (4-7); partition 2, shifted by 2
    # frames: C (0-1), D (2-5), E (6-7). Their intersections, the coarse units: frames 0-1, 2-3,
    # 4-5, 6-7, two atoms each.
    def cells(utterance, num_cells, frequency_bands, time_spacing, offset=0):
        return ((torch.arange(8) + offset) // 4).expand(4, 8)

    monkeypatch.setattr("captum_spes._core.coarse_to_fine.coarse_labels", cells)
    atoms = CustomMasks(torch.arange(8)[None, :]).segment(torch.zeros(4, 8))
    settings = dict(coarse_fraction=0.5, masks_per_atom=4.0, refine_from=4, coarse_partitions=2, detail="raw")
    estimator = CoarseToFine(**settings).bind(1, [8], "cpu")
    stages = estimator.plan(_utterance(), atoms, 16, 0.5)
    first, second = next(stages), next(stages)
    assert (first.n_masks, second.n_masks, second.num_segments) == (4, 4, 3)
    # A: occluded {4, 6}, kept {1, 1}: effect 4, se 1. B: occluded {6, 1}, kept {4, 1}: 1, sqrt(8.5).
    estimator.add(0, torch.tensor([[4.0], [6.0], [1.0], [1.0]]), torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]]).bool())
    # D: occluded {6, 4}, kept {1, 3}: effect 3, se sqrt(2). C and E: effect 0, se sqrt(6.5).
    flags = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]]).bool()
    estimator.add(1, torch.tensor([[6.0], [4.0], [1.0], [3.0]]), flags)
    refine = next(stages)
    # Coarse units' z: frames 0-1 (A, C) 2 / (sqrt(7.5) / 2) = 1.46, frames 2-3 (A, D) 3.5 /
    # (sqrt(3) / 2) = 4.04, frames 4-5 (B, D) 1.23, frames 6-7 (B, E) 0.26. Budget 8 / 4 = 2
    # atoms: frames 2-3 are refined, the other three units kept clean.
    assert refine.level == 2 and refine.n_masks == 8
    assert refine.probabilities.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]
    assert estimator.design["coarse_units"] == 4 and estimator.design["refined_cells"] == 1
    # Stage 2: atom 2 effect 3 - 1 = 2 (se 0), atom 3 effect 2 - 2 = 0 (se sqrt(2)).
    flags = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]).bool()
    estimator.add(2, torch.tensor([[3.0], [3.0], [1.0], [1.0]]), flags)
    with pytest.raises(StopIteration):
        next(stages)
    estimate = estimator.finalize([first.labels, second.labels, refine.labels])
    # Scale: the refined unit's coarse value 3.5 over its atoms' stage-2 effects 2 = 1.75; the
    # atoms' detail +-1 (effect minus the unit's mean atom effect 1) times 1.75 around 3.5.
    torch.testing.assert_close(estimate.attribution[0, 0], torch.tensor([2.0, 2.0, 5.25, 1.75, 2.0, 2.0, 0.5, 0.5]))
    assert estimate.num_units == 5 and estimate.units[0].tolist() == [2, 2, 0, 1, 3, 3, 4, 4]
    assert estimate.standard_error[0, 1].item() == pytest.approx(1.75 * 2**0.5)
    assert estimate.z[0, 0] == float("inf") and estimate.z[0, 1] == 0
    assert estimate.z[0, 2].item() == pytest.approx(2 / (7.5**0.5 / 2), rel=1e-6)
    # Frames 0-1 were occluded by 2 masks of A and 2 of C; the refined atoms by 2 each.
    assert estimate.occluded.tolist() == [2, 2, 4, 4, 4]
    assert "varying with refined units' atoms" in estimate.info["map"]


def test_cells_fine_enough_in_time_for_the_speech():
    # 500 masks: 125 cells. Square SLIC cells at 30 per second: enough for 4.17 s of speech;
    # narrowed in time at 17 per second: 7.35 s; in 2 bands 62.5 time slices at 8 per second:
    # 7.8 s; in 1 band 125 slices: 15.6 s.
    square, narrow = CoarseToFine(), CoarseToFine(time_spacing=8.0)
    banded, one_band = CoarseToFine(frequency_bands=2), CoarseToFine(frequency_bands=1)
    assert square.resolves_words(500, 4.16) and not square.resolves_words(500, 4.17)
    assert narrow.resolves_words(500, 7.35) and not narrow.resolves_words(500, 7.36)
    assert CoarseToFine(time_spacing=16.0).resolves_words(500, 7.35)
    assert not CoarseToFine(time_spacing=4.0).resolves_words(500, 4.17)  # unmeasured: as square
    assert banded.resolves_words(500, 7.8) and not banded.resolves_words(500, 7.9)
    assert one_band.resolves_words(500, 15.6) and not one_band.resolves_words(500, 15.7)
    # 2000 masks: the coarse stage has 500 masks too (a quarter), the same cells.
    assert square.resolves_words(2000, 4.16) and not square.resolves_words(2000, 4.17)
    # Fitted to the speech: square cells where they resolve words, else the same settings with
    # cells narrowed in time, else nothing (the default then takes the reference).
    custom = CoarseToFine(masks_per_atom=3.0)
    assert custom.fit_to_speech(500, 4.0) is custom
    assert custom.fit_to_speech(500, 6.0).config() == {**custom.config(), "time_spacing": 8.0}
    assert custom.fit_to_speech(2000, 6.0).config() == {**custom.config(), "time_spacing": 8.0}
    assert custom.fit_to_speech(500, 7.4) is None and custom.fit_to_speech(2000, 7.4) is None
    assert CoarseToFine(time_spacing=4.0).fit_to_speech(500, 5.0).time_spacing == 8.0
    # A design asked for stays what it is, or nothing: narrow cells and bands are not changed.
    assert narrow.fit_to_speech(500, 7.0) is narrow and narrow.fit_to_speech(500, 7.4) is None
    assert banded.fit_to_speech(500, 7.0) is banded and banded.fit_to_speech(500, 8.0) is None
    assert one_band.fit_to_speech(500, 15.0) is one_band and one_band.fit_to_speech(500, 16.0) is None


def test_budget_below_refine_from_goes_to_the_coarse_stage():
    result = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(),
        feature_mask="element",
        n_masks=200,
        token_p=None,
        estimator=CoarseToFine(masks_per_cell=10, coarse_partitions=1),
    )
    design = result.metadata["estimator"]
    assert design["coarse_masks"] == 200 and design["refine_masks"] == 0
    assert result.metadata["masks_per_level"] == [200] and result.num_units == design["cells"]


@pytest.mark.parametrize(
    ("frequency_bands", "partitions", "fit"),
    [
        (None, 1, "difference"),
        (2, 1, "difference"),
        (None, 4, "difference"),
        (None, 1, "regression"),
        (None, 4, "regression"),
        (None, 1, "smooth"),
        (None, 4, "smooth"),
    ],
)
def test_coarse_to_fine_localises_known_regions_and_its_significance_holds(frequency_bands, partitions, fit):
    estimator = CoarseToFine(
        refine_from=500,
        masks_per_cell=20.0,
        masks_per_atom=2.0,
        frequency_bands=frequency_bands,
        coarse_partitions=partitions,
        coarse_fit=fit,
    )
    result = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), feature_mask="element", n_masks=1200, token_p=None, estimator=estimator, seed=2
    )
    design = result.metadata["estimator"]
    assert design["coarse_masks"] == 300 and design["refine_masks"] == 900 and design["refined_atoms"] > 0
    significant = result.significance()
    for k, (mels, frames) in enumerate(REGIONS):
        inside = torch.zeros(8, 20, dtype=torch.bool)
        inside[mels, frames] = True
        size = int(inside.sum())
        flat = result.spectrogram_attr[k].flatten()
        assert inside.flatten()[flat.argmax()], f"token {k}: the peak is outside its region"
        assert significant[k][inside].float().mean() >= 0.8
        assert (significant[k] & ~inside).sum() <= 2
        top_inside = inside.flatten()[flat.topk(size).indices].float().mean()
        # SLIC cells follow the regions' edges (the toy's regions are bright on a dark
        # background): the whole top is the region. Grid cells cut across the regions, and the
        # refined detail ranks elements inside a cell, not across cells: the top holds the
        # region's best cell, its other elements with it (0.6 of the top here). Shifted partitions
        # average cells that reach past the edges: a few elements beside the region join the top.
        floor = 0.5 if frequency_bands is not None else (1.0 if partitions == 1 else 0.8)
        assert top_inside >= floor, f"token {k}: top mostly outside its region"


@pytest.mark.parametrize("partitions", [2, 4])
def test_shifted_partitions_localise_known_regions(partitions):
    estimator = CoarseToFine(masks_per_cell=10.0, coarse_partitions=partitions)
    result = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), feature_mask="element", n_masks=400, token_p=None, estimator=estimator
    )
    assert len(result.metadata["estimator"]["partition_cells"]) == partitions
    assert result.num_units > max(result.metadata["estimator"]["partition_cells"])  # the intersections
    significant = result.significance()
    for k, (mels, frames) in enumerate(REGIONS):
        inside = torch.zeros(8, 20, dtype=torch.bool)
        inside[mels, frames] = True
        flat = result.spectrogram_attr[k].flatten()
        assert inside.flatten()[flat.argmax()], f"token {k}: the peak is outside its region"
        assert significant[k][inside].all()
        assert inside.flatten()[flat.topk(int(inside.sum())).indices].float().mean() >= 0.8


def test_refuses_what_it_cannot_do():
    spes = SPES(SpeechSeq2SeqWrapper(tiny_whisper()))
    with pytest.raises(InputError, match='takes a fixed budget: pass n_masks=<int>, not "auto"'):
        spes.attribute(whisper_features(), n_masks="auto", estimator="coarse_to_fine")
    with pytest.raises(InputError, match='token_masks="joint" is not supported'):
        spes.attribute(whisper_features(), n_masks=8, estimator="coarse_to_fine", token_masks="joint")


@pytest.mark.parametrize(
    ("partitions", "refine_from", "fit"),
    [
        (1, 500, "difference"),
        (2, 1000, "difference"),
        (2, 500, "difference"),
        (2, 500, "regression"),
        (2, 500, "smooth"),
        (4, 1000, "smooth"),
    ],
)
def test_results_do_not_depend_on_the_batch_size(partitions, refine_from, fit):
    runs = [
        SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
            toy_features(),
            feature_mask="element",
            n_masks=600,
            token_p=0.5,
            estimator=CoarseToFine(
                refine_from=refine_from, masks_per_cell=20.0, coarse_partitions=partitions, coarse_fit=fit
            ),
            perturbations_per_eval=per_eval,
        )
        for per_eval in (1, 7, 64)
    ]
    for other in runs[1:]:
        torch.testing.assert_close(other.spectrogram_attr, runs[0].spectrogram_attr, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(other.spectrogram_z, runs[0].spectrogram_z, rtol=1e-4, atol=1e-5, equal_nan=True)
        assert other.metadata["estimator"] == runs[0].metadata["estimator"]
    assert runs[0].token_attr is not None and runs[0].metadata["estimator"]["name"] == "coarse_to_fine"
