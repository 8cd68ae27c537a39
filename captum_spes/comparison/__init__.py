#!/usr/bin/env python3
r"""SPES against Captum baselines on one utterance: cost, faithfulness, compactness, plausibility.

>>> from captum_spes.comparison import compare
>>> report = compare(wrapper, features, methods=["spes", "occlusion"], n_masks=16, metrics=["size"])
>>> [row.method for row in report.rows]
['spes', 'occlusion']
>>> path = report.to_csv("comparison.csv"); fig, axes = report.plot()

The command line (``captum-spes compare``) lives in :mod:`captum_spes.comparison.cli`, imported
only by the CLI.
"""

from captum_spes.comparison.core import DEFAULT_METHODS, METRICS, compare, prepare_context
from captum_spes.comparison.methods import METHODS, SpeechOnlyForward, count_passes
from captum_spes.comparison.report import COLUMNS, ComparisonReport, MethodResult

__all__ = [
    "compare",
    "prepare_context",
    "ComparisonReport",
    "MethodResult",
    "COLUMNS",
    "METHODS",
    "DEFAULT_METHODS",
    "METRICS",
    "SpeechOnlyForward",
    "count_passes",
]
