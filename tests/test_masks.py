"""Mask families: SLIC segment counts and orientation, grid families, custom ids, registry."""

import pytest
import torch

from captum_spes import (
    MASK_FAMILIES,
    CustomMasks,
    ElementMasks,
    FrequencyMasks,
    MaskFamily,
    SLICMasks,
    TimeMasks,
    register_mask_family,
)
from captum_spes.masks import resolve_mask_family


def _assert_valid_level(level, shape):
    """Labels cover ``shape`` with contiguous ids 0..n-1 and num_segments matches them."""
    assert tuple(level.labels.shape) == shape
    assert level.labels.dtype == torch.long
    ids = torch.unique(level.labels)
    assert torch.equal(ids, torch.arange(level.num_segments))


def _two_halves(n_mels=20, n_frames=60, split=30):
    x = torch.zeros(n_mels, n_frames)
    x[:, split:] = 1.0
    return x


# ----- SLIC ------------------------------------------------------------------------------


def test_slic_requested_counts_scale_with_duration():
    family = SLICMasks()  # (2000, 2500, 3000) per 500 frames, capped at 750 frames
    assert family.requested_segments(500) == [2000, 2500, 3000]
    assert family.requested_segments(300) == [1200, 1500, 1800]
    assert family.requested_segments(1000) == [3000, 3750, 4500]  # min(1000, 750) = 750
    uncapped = SLICMasks(threshold_duration=None)
    assert uncapped.requested_segments(1000) == [4000, 5000, 6000]
    assert SLICMasks(n_segments=(7,)).requested_segments(110) == [2]  # round(7 * 110 / 500) = round(1.54)
    assert SLICMasks(n_segments=(1, 3)).requested_segments(10) == [1, 1]  # at least 1
    assert SLICMasks(dynamic=False).requested_segments(10) == [2000, 2500, 3000]


def test_slic_levels_record_requested_and_obtained_counts():
    spectrogram = torch.rand(16, 40, generator=torch.Generator().manual_seed(0))
    family = SLICMasks(n_segments=(10, 40), dynamic=False)
    levels = family.segment(spectrogram)
    assert [lv.requested_segments for lv in levels] == [10, 40]
    for level in levels:
        _assert_valid_level(level, (16, 40))
        assert level.num_segments >= 1
    assert levels[0].num_segments < levels[1].num_segments


def test_slic_runs_on_time_frequency_image_and_transposes_back():
    # Non-square input with a boundary in time only: the two segments split the frames.
    levels = SLICMasks(n_segments=(2,), dynamic=False, sigma=0.0).segment(_two_halves())
    labels = levels[0].labels
    _assert_valid_level(levels[0], (20, 60))
    assert levels[0].num_segments == 2
    assert (labels[:, :30] == labels[0, 0]).all()
    assert (labels[:, 30:] == labels[0, -1]).all()
    assert labels[0, 0] != labels[0, -1]


def test_slic_dynamic_count_uses_frames_not_mels():
    # (n_mels=20, n_frames=250): a dynamic family requests round(n * 250 / 500) segments.
    levels = SLICMasks(n_segments=(8,), sigma=0.0).segment(torch.rand(20, 250))
    assert levels[0].requested_segments == 4


def test_slic_cmvn_is_invariant_to_per_bin_affine_changes():
    generator = torch.Generator().manual_seed(1)
    pattern = torch.rand(12, 50, generator=generator, dtype=torch.float64)
    scale = torch.rand(12, 1, generator=generator, dtype=torch.float64) + 0.5
    offset = torch.randn(12, 1, generator=generator, dtype=torch.float64) * 5
    family = SLICMasks(n_segments=(15,), dynamic=False, cmvn=True)
    assert family.config()["cmvn"] is True
    plain = family.segment(pattern)[0].labels
    shifted = family.segment(pattern * scale + offset)[0].labels
    assert torch.equal(plain, shifted)
    # Without CMVN the per-bin offsets dominate the image and change the segmentation.
    raw = SLICMasks(n_segments=(15,), dynamic=False, cmvn=False)
    assert not torch.equal(raw.segment(pattern)[0].labels, raw.segment(pattern * scale + offset)[0].labels)


def test_slic_constant_input_gives_valid_labels():
    levels = SLICMasks(n_segments=(4,), dynamic=False).segment(torch.full((8, 20), 0.3))
    _assert_valid_level(levels[0], (8, 20))


def _median_extents(level):
    """Median time and mel extent (bounding box) of a level's segments."""
    widths, heights = [], []
    for segment in range(level.num_segments):
        inside = level.labels == segment
        frames, mels = inside.any(0).nonzero()[:, 0], inside.any(1).nonzero()[:, 0]
        widths.append(float(frames.max() - frames.min() + 1))
        heights.append(float(mels.max() - mels.min() + 1))
    return torch.tensor(widths).median().item(), torch.tensor(heights).median().item()


def test_slic_time_spacing_narrows_segments_in_time():
    # A smooth random field, so that SLIC trades colour against distance as on a spectrogram.
    noise = torch.rand(1, 1, 48, 240, generator=torch.Generator().manual_seed(0))
    image = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)[0, 0]
    square = SLICMasks(n_segments=(30,), dynamic=False).segment(image)[0]
    default = SLICMasks(n_segments=(30,), dynamic=False, time_spacing=1.0).segment(image)[0]
    narrow = SLICMasks(n_segments=(30,), dynamic=False, time_spacing=8.0).segment(image)[0]
    assert torch.equal(square.labels, default.labels)  # 1 is the reference's square metric
    (square_width, square_height), (narrow_width, narrow_height) = _median_extents(square), _median_extents(narrow)
    assert narrow_width <= square_width / 2 and narrow_height > square_height
    _assert_valid_level(narrow, (48, 240))
    assert SLICMasks(time_spacing=8).config()["time_spacing"] == 8.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"time_spacing": 0},
        {"time_spacing": "8"},
        {"n_segments": ()},
        {"n_segments": (0,)},
        {"compactness": 0},
        {"sigma": -1},
        {"reference_duration": 0},
        {"threshold_duration": 0},
    ],
)
def test_slic_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SLICMasks(**kwargs)


# ----- grid families ----------------------------------------------------------------------


def test_time_masks_by_hand():
    (level,) = TimeMasks(3).segment(torch.zeros(2, 7))
    assert torch.equal(level.labels, torch.tensor([[0, 0, 0, 1, 1, 1, 2]] * 2))
    assert level.num_segments == 3 and level.requested_segments is None
    levels = TimeMasks([1, 4]).segment(torch.zeros(2, 5))
    assert torch.equal(levels[0].labels, torch.tensor([[0, 1, 2, 3, 4]] * 2))
    assert torch.equal(levels[1].labels, torch.tensor([[0, 0, 0, 0, 1]] * 2))
    assert [lv.num_segments for lv in levels] == [5, 2]


def test_frequency_masks_by_hand():
    (level,) = FrequencyMasks(2).segment(torch.zeros(5, 3))
    assert torch.equal(level.labels, torch.tensor([[0] * 3, [0] * 3, [1] * 3, [1] * 3, [2] * 3]))
    assert level.num_segments == 3


def test_element_masks_by_hand():
    (level,) = ElementMasks().segment(torch.zeros(2, 3))
    assert torch.equal(level.labels, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    assert level.num_segments == 6


@pytest.mark.parametrize("family", [TimeMasks, FrequencyMasks])
@pytest.mark.parametrize("sizes", [0, -1, 1.5, [], [2, 0]])
def test_grid_families_reject_bad_group_sizes(family, sizes):
    with pytest.raises(ValueError):
        family(sizes)


# ----- custom ids -------------------------------------------------------------------------


def test_custom_masks_broadcast_and_renumber():
    spectrogram = torch.zeros(3, 4)
    time_ids = torch.tensor([[5, 5, 9, 2]])  # (1, n_frames)
    band_ids = torch.tensor([[7], [7], [1]])  # (n_mels, 1)
    batched = torch.tensor([[[4, 4, 4, 8]]])  # (1, 1, n_frames)
    levels = CustomMasks([time_ids, band_ids, batched]).segment(spectrogram)
    assert torch.equal(levels[0].labels, torch.tensor([[1, 1, 2, 0]] * 3))
    assert torch.equal(levels[1].labels, torch.tensor([[1] * 4, [1] * 4, [0] * 4]))
    assert torch.equal(levels[2].labels, torch.tensor([[0, 0, 0, 1]] * 3))
    assert [lv.num_segments for lv in levels] == [3, 2, 2]
    for level in levels:
        _assert_valid_level(level, (3, 4))
    assert CustomMasks(time_ids).config() == {"family": "custom", "num_levels": 1}


def test_custom_masks_errors():
    with pytest.raises(ValueError, match="does not broadcast"):
        CustomMasks(torch.zeros(1, 5, dtype=torch.long)).segment(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="integer tensor"):
        CustomMasks(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="at least one"):
        CustomMasks([])


def test_custom_masks_from_intervals_gap_segments():
    family = CustomMasks.from_intervals([(0.2, 0.3), (0.0, 0.1)], num_frames=40, frame_rate=100.0)
    (level,) = family.segment(torch.zeros(2, 40))
    # frames 0-9: first interval, 10-19: gap, 20-29: second interval, 30-39: gap
    expected = torch.tensor([0] * 10 + [2] * 10 + [1] * 10 + [3] * 10)
    assert torch.equal(level.labels, expected[None].expand(2, 40))
    assert level.num_segments == 4


def test_custom_masks_from_intervals_without_gaps():
    family = CustomMasks.from_intervals([(0.0, 0.05), (0.05, 0.1)], num_frames=10)
    (level,) = family.segment(torch.zeros(1, 10))
    assert torch.equal(level.labels, torch.tensor([[0] * 5 + [1] * 5]))


# ----- registry ---------------------------------------------------------------------------


def test_register_and_resolve_mask_family():
    register_mask_family("every_other_frame", lambda: TimeMasks(2))
    try:
        family = resolve_mask_family("every_other_frame")
        assert isinstance(family, TimeMasks) and family.frames_per_segment == [2]
    finally:
        MASK_FAMILIES.pop("every_other_frame")
    with pytest.raises(ValueError):
        register_mask_family("", TimeMasks)


def test_resolve_mask_family_forms():
    assert isinstance(resolve_mask_family(None), SLICMasks)
    named = [("slic", SLICMasks), ("time", TimeMasks), ("frequency", FrequencyMasks), ("element", ElementMasks)]
    for name, cls in named:
        assert isinstance(resolve_mask_family(name), cls)
    family = FrequencyMasks(4)
    assert resolve_mask_family(family) is family
    ids = torch.zeros(1, 5, dtype=torch.long)
    assert isinstance(resolve_mask_family(ids), CustomMasks)
    assert len(resolve_mask_family([ids, ids]).feature_masks) == 2
    assert isinstance(resolve_mask_family(ids), MaskFamily)


def test_resolve_mask_family_errors():
    with pytest.raises(ValueError, match="not a registered mask family"):
        resolve_mask_family("watershed")
    with pytest.raises(TypeError):
        resolve_mask_family(3.0)
    with pytest.raises(TypeError):
        resolve_mask_family([torch.zeros(1, 5, dtype=torch.long), "time"])
