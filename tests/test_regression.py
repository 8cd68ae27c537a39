"""Least squares on streamed Gram matrices, by hand."""

import pytest
import torch

from captum_spes._core.estimators import ReferenceEstimator
from captum_spes._core.regression import GramSums, boundary_laplacian

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


# --- penalised least squares ---------------------------------------------------------
CHAIN = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)  # two neighbouring units


def _sums(x, y):
    sums = GramSums(y.shape[1], x.shape[1], "cpu")
    sums.add(y, x)
    return sums


def test_boundary_laplacian_by_hand():
    # Units 0 0 1 / 2 2 1: element pairs across boundaries 0|1 once, 2|1 once, 0|2 twice.
    laplacian = boundary_laplacian(torch.tensor([[0, 0, 1], [2, 2, 1]]))
    expected = torch.tensor([[3.0, -1.0, -2.0], [-1.0, 2.0, -1.0], [-2.0, -1.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(laplacian, expected)


def test_smooth_fit_by_hand():
    # G = 2 I and X_c^T y_c = (2, 20). With lambda = 1: (G + L)^{-1} = [[3, 1], [1, 3]] / 8, so
    # theta = (26, 62) / 8: the effects 1 and 10 pulled together, their sum kept. df = tr(A G)
    # = 1.5; RSS = 210 - 2 theta.b + theta^T G theta = 28.25; sigma^2 = 28.25 / (8 - 1 - 1.5);
    # Var = sigma^2 diag(A G A) = sigma^2 * 2 * 10 / 64.
    fit = _sums(X, Y).fit_smooth(CHAIN, lambdas=torch.tensor([1.0]))
    torch.testing.assert_close(fit["effect"], torch.tensor([[3.25, 7.75]], dtype=torch.float64))
    torch.testing.assert_close(fit["effective_units"], torch.tensor([1.5], dtype=torch.float64))
    torch.testing.assert_close(fit["r_squared"], torch.tensor([1 - 28.25 / 210], dtype=torch.float64))
    se = (28.25 / 5.5 * 20 / 64) ** 0.5
    torch.testing.assert_close(fit["standard_error"], torch.full((1, 2), se, dtype=torch.float64))
    torch.testing.assert_close(fit["z"], fit["effect"] / se)


def test_smooth_fit_without_smoothing_is_least_squares_and_scale_makes_a_density():
    sums = _sums(X, Y)
    unpenalised = sums.fit_smooth(CHAIN, lambdas=torch.tensor([1e-9]))
    plain = sums.fit()
    for key in ("effect", "standard_error", "z", "r_squared"):
        torch.testing.assert_close(unpenalised[key], plain[key])
    # Unit 1 twice the size of a scale-1 region: its density is half its effect.
    scaled = sums.fit_smooth(CHAIN, scale=torch.tensor([1.0, 2.0]), lambdas=torch.tensor([1e-9]))
    torch.testing.assert_close(scaled["effect"], torch.tensor([[1.0, 5.0]], dtype=torch.float64))


def _chain(num_units):
    laplacian = torch.zeros(num_units, num_units, dtype=torch.float64)
    for u in range(num_units - 1):
        laplacian[u, u] += 1
        laplacian[u + 1, u + 1] += 1
        laplacian[u, u + 1] = laplacian[u + 1, u] = -1
    return laplacian


def test_cross_validation_smooths_a_flat_map_and_not_a_sharp_one():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(300, 12, generator=generator) < 0.5
    noise = 0.3 * torch.randn(300, generator=generator, dtype=torch.float64)
    flat = (x.double() @ torch.full((12,), 1.0, dtype=torch.float64) + noise)[:, None]
    sharp_effects = torch.zeros(12, dtype=torch.float64)
    sharp_effects[5] = 8.0
    sharp = (x.double() @ sharp_effects + noise)[:, None]
    smooth_flat = _sums(x, flat).fit_smooth(_chain(12))
    smooth_sharp = _sums(x, sharp).fit_smooth(_chain(12))
    # The flat map: a strong penalty, the effects nearly equal and closer to 1 than least squares.
    assert smooth_flat["effective_units"] < 4
    plain_flat = _sums(x, flat).fit()
    assert (smooth_flat["effect"] - 1).abs().max() < (plain_flat["effect"] - 1).abs().max()
    # The sharp peak: little smoothing, the peak kept where it is and near its size.
    assert smooth_sharp["effective_units"] > 8
    assert int(smooth_sharp["effect"].argmax()) == 5 and smooth_sharp["effect"][0, 5] > 7


def test_smooth_fit_takes_more_units_than_masks():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(10, 20, generator=generator) < 0.5
    y = x.double()[:, :1] * 3 + 0.1 * torch.randn(10, 1, generator=generator, dtype=torch.float64)
    fit = _sums(x, y).fit_smooth(_chain(20))
    varies = x.any(0) & ~x.all(0)
    assert torch.isfinite(fit["effect"][:, varies]).all() and fit["effective_units"] < 9
    with pytest.raises(ValueError, match="needs more than"):
        _sums(x, y).fit()
    with pytest.raises(ValueError, match="needs at least 3 masks, got 2"):
        _sums(x[:2], y[:2]).fit_smooth(_chain(20))
