"""Coarse cells: nesting segments into cells, grids of bands, SLIC cells narrowed and shifted in time."""

import torch

from captum_spes._core.coarse_cells import coarse_labels, nest, shift_offsets
from captum_spes._core.utterance import Utterance
from captum_spes.adapters import InputLayout


def _utterance(n_frames=8):
    speech = torch.arange(4 * n_frames, dtype=torch.float32).reshape(1, 4, n_frames)
    return Utterance.prepare(speech, InputLayout("mel_first"))


def test_nest_assigns_each_fine_segment_to_the_coarse_one_holding_most_of_it():
    fine = torch.tensor([[0, 0, 1, 1, 2, 2]])
    coarse = torch.tensor([[5, 5, 5, 7, 7, 7]])  # fine 1 is split 1:1 -> the first maximum
    assert nest(fine, coarse).tolist() == [0, 0, 1]
    coarse = torch.tensor([[3, 3, 9, 9, 9, 9]])
    assert nest(fine, coarse).tolist() == [0, 1, 1]


def test_frequency_bands_make_a_grid_of_bands_and_time_slices():
    # 4 mels x 8 frames, 4 cells in 2 bands: 2 time slices of 4 frames per band.
    labels = coarse_labels(_utterance(), 4, 2)
    assert labels.tolist() == [[0] * 4 + [1] * 4] * 2 + [[2] * 4 + [3] * 4] * 2
    # One band: 8 cells are 8 one-frame columns; more bands than mels are capped at the mels.
    assert coarse_labels(_utterance(), 8, 1).tolist() == [list(range(8))] * 4
    assert coarse_labels(_utterance(), 4, 9).tolist() == [[k] * 8 for k in range(4)]


def test_shift_offsets_are_fractions_of_the_median_cell_width():
    # Cells 2, 4 and 6 frames wide (2 mels): median width 4.
    cells = torch.tensor([[0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]] * 2)
    assert shift_offsets(cells, 1) == [0]
    assert shift_offsets(cells, 2) == [0, 2]
    assert shift_offsets(cells, 3) == [0, 1, 3]  # 4/3 and 8/3 rounded
    assert shift_offsets(cells, 4) == [0, 1, 2, 3]


def test_shifted_grid_moves_the_slice_boundaries():
    # 8 frames in 2 slices of 4: boundaries 2 frames earlier give slices of 2, 4 and 2 frames.
    labels = coarse_labels(_utterance(), 2, 1, 1.0, offset=2)
    assert labels.tolist() == [[0, 0, 1, 1, 1, 1, 2, 2]] * 4
    shifted_slic = coarse_labels(_utterance(24), 6, None, 1.0, offset=3)
    assert shifted_slic.shape == (4, 24) and shifted_slic.min() == 0


def test_time_spacing_narrows_the_slic_cells():
    # A smooth random field (48 mels x 240 frames), so that SLIC trades colour against distance.
    noise = torch.rand(1, 1, 48, 240, generator=torch.Generator().manual_seed(0))
    field = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)
    utterance = Utterance.prepare(field[0], InputLayout("mel_first"))

    def median_width(labels):
        widths = [
            float(col.nonzero().max() - col.nonzero().min() + 1)
            for col in ((labels == k).any(0) for k in range(int(labels.max()) + 1))
        ]
        return torch.tensor(widths).median().item()

    square = coarse_labels(utterance, 30, None, 1.0)
    narrow = coarse_labels(utterance, 30, None, 8.0)
    assert median_width(narrow) <= median_width(square) / 2
