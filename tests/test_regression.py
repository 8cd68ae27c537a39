"""Least squares on streamed Gram matrices, by hand."""

import pytest
import torch

from captum_spes._core.estimators import ReferenceEstimator
from captum_spes._core.regression import GramSums

# A 2 x 2 factorial design twice over; the noise is orthogonal to both indicators and the mean.
X = torch.tensor([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1], [1, 0], [0, 1], [0, 0]], dtype=torch.bool)
NOISE = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
Y = (1.0 * X[:, 0] + 10.0 * X[:, 1] + NOISE)[:, None]


def _fit(x, y, batches=1):
    sums = GramSums(y.shape[1], x.shape[1], "cpu")
    for xb, yb in zip(x.chunk(batches), y.chunk(batches)):
        sums.add(yb, xb)
    return sums.fit()


def test_one_unit_is_the_difference_of_means_with_a_pooled_error():
    # Occluded: 3, 5 (mean 4); kept: 1, 1 (mean 1): effect 3. Residuals -1, 1, 0, 0: RSS 2 over
    # 4 - 1 - 1 degrees of freedom = 1; centred indicators +-1/2: Gram 1, so the error is 1.
    fit = _fit(torch.tensor([[1], [1], [0], [0]], dtype=torch.bool), torch.tensor([[3.0], [5.0], [1.0], [1.0]]))
    torch.testing.assert_close(fit["effect"], torch.tensor([[3.0]], dtype=torch.float64))
    torch.testing.assert_close(fit["standard_error"], torch.tensor([[1.0]], dtype=torch.float64))
    torch.testing.assert_close(fit["z"], torch.tensor([[3.0]], dtype=torch.float64))


def test_the_other_units_leave_the_noise():
    # Coefficients 1 and 10 exactly; RSS = 8 over 8 - 2 - 1 = 5 degrees of freedom: 1.6; the
    # centred indicators are orthogonal with squares summing to 2: errors sqrt(1.6 / 2).
    fit = _fit(X, Y)
    torch.testing.assert_close(fit["effect"], torch.tensor([[1.0, 10.0]], dtype=torch.float64))
    torch.testing.assert_close(fit["standard_error"], torch.full((1, 2), 0.8**0.5, dtype=torch.float64))
    # Y is 12, 0, 9, 1, 10, 2, 11, -1 (mean 5.5): total sum of squares 210, so R^2 = 1 - 8 / 210.
    torch.testing.assert_close(fit["r_squared"], torch.tensor([1 - 8 / 210], dtype=torch.float64))
    # The difference of means of unit 0 is also 1 (a balanced design), but unit 1's effect of 10
    # is its noise: both groups have variance 104 / 3, so Welch's error is sqrt(52 / 3).
    welch = ReferenceEstimator().bind(1, [2], "cpu")
    welch.add(0, Y, X)
    reference = welch.level_statistics(0)
    torch.testing.assert_close(reference["effect"][0, 0], torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(reference["standard_error"][0, 0], torch.tensor((52 / 3) ** 0.5, dtype=torch.float64))


def test_batches_do_not_change_the_fit():
    torch.testing.assert_close(_fit(X, Y, batches=3), _fit(X, Y))


def test_a_unit_that_never_varies_has_no_coefficient():
    x = torch.cat([X, torch.zeros(8, 1, dtype=torch.bool), torch.ones(8, 1, dtype=torch.bool)], dim=1)
    fit = _fit(x, Y)
    torch.testing.assert_close(fit["effect"][:, :2], torch.tensor([[1.0, 10.0]], dtype=torch.float64))
    assert fit["effect"][:, 2:].isnan().all() and fit["z"][:, 2:].isnan().all()


def test_an_exact_fit_has_no_noise_and_collinear_units_share_their_effect():
    y = (2.0 * X[:, 0] + 4.0 * X[:, 1]).double()[:, None]
    fit = _fit(X, y)
    torch.testing.assert_close(fit["standard_error"], torch.zeros(1, 2, dtype=torch.float64))
    twice = torch.cat([X[:, :1], X[:, :1]], dim=1)  # the same unit twice: minimum-norm halves
    shared = _fit(twice, (6.0 * X[:, 0]).double()[:, None])
    torch.testing.assert_close(shared["effect"], torch.tensor([[3.0, 3.0]], dtype=torch.float64))


def test_too_few_masks_for_the_units_is_an_error():
    with pytest.raises(ValueError, match="a least-squares fit of 2 units needs more than 3 masks, got 3"):
        _fit(X[:3], Y[:3])
