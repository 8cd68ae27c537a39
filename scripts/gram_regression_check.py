#!/usr/bin/env python3
"""Could a regression on the streamed Gram matrix lower the noise of a SPES map? A check on
recorded masks.

A map's element is a difference of means: the mean impact of the masks that occlude its unit
minus that of the masks that keep it. Its noise is the whole variance of a token's impact,
including what every *other* occluded unit contributes. A least-squares fit of the impact on
all the units' occlusion indicators (the Gram matrix ``X^T X`` and ``X^T y`` stream in memory
independent of the number of masks) removes what the other units explain linearly, at the
price of ``p`` fitted unknowns: its coefficient's variance over the difference of means' is
about ``(1 - adjusted R^2) * N / (N - p)``. So the fit helps only where the impact is
additive enough in the units and ``N`` is large against ``p``.

For every stage of a recorded run (``estimator_study.py run`` saves each batch's scores and
occlusions beside the map, ``*.trace.pt``) this prints N masks, p units that vary, the per-token
R^2 and adjusted R^2 of the fit (median and range over tokens), and the median over tokens and
units of the exact variance ratio of the fit's coefficient to the difference of means:
``sigma_res^2 [(Xc^T Xc)^-1]_uu`` against Welch's ``s_1^2 / n_1 + s_0^2 / n_0``; both for the
KL impact and for its logarithm (a scale on which effects might add).

    python scripts/gram_regression_check.py study/maps/coarse_to_fine_slic_t8_k4_refine_librivox_0920_2000_s1.trace.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from captum_spes._core.estimators import ReferenceEstimator
from captum_spes._core.regression import GramSums


def regression_check(occluded: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Fit ``y`` ``(N, T)`` on the indicators ``occluded`` ``(N, p)`` by least squares, as
    ``CoarseToFine(coarse_fit="regression")`` does, beside the difference of means."""
    n, p = occluded.shape
    sums = GramSums(y.shape[1], p, "cpu")
    sums.add(y, occluded)
    fit = sums.fit()
    welch = ReferenceEstimator().bind(y.shape[1], [p], "cpu")
    welch.add(0, y, occluded)
    difference = welch.level_statistics(0)
    adjusted = 1 - (1 - fit["r_squared"]) * (n - 1) / (n - p - 1)
    ratio = fit["standard_error"].square() / difference["standard_error"].square()
    return {"r2": fit["r_squared"], "adjusted": adjusted, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="+", type=Path, help="*.trace.pt files of estimator_study.py run")
    args = parser.parse_args()
    print("| trace | stage | N | p | impact | R^2 median | adjusted R^2 median [min, max] | variance ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in args.traces:
        batches = torch.load(path)
        for stage in sorted({int(level) for level, _, _ in batches}):
            scores = torch.cat([s for level, s, _ in batches if level == stage]).double()
            occluded = torch.cat([o for level, _, o in batches if level == stage])
            occluded = occluded[:, occluded.any(0) & ~occluded.all(0)]
            n, p = occluded.shape
            if n <= p + 2:
                print(f"| {path.name} | {stage} | {n} | {p} | – | no fit: N <= p + 2 | – | – |")
                continue
            for label, y in (("KL", scores), ("log KL", scores.clamp_min(1e-12).log())):
                check = regression_check(occluded, y)
                adjusted = check["adjusted"]
                spread = f"{adjusted.median():.2f} [{adjusted.min():.2f}, {adjusted.max():.2f}]"
                print(
                    f"| {path.name} | {stage} | {n} | {p} | {label} | {check['r2'].median():.2f} | "
                    f"{spread} | {check['ratio'].median():.2f} |"
                )


if __name__ == "__main__":
    main()
