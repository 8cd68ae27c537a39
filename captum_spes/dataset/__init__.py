#!/usr/bin/env python3
r"""Explaining and evaluating a whole test set, on one process or under ``torchrun``.

* :func:`read_manifest` / :func:`read_hf_dataset`: the test set;
* :func:`explain_dataset`: one saved SPESResult per utterance, resumable and crash-safe
  (:class:`DatasetStore`);
* :func:`evaluate_dataset`: corpus-level deletion, insertion, size and plausibility.

The command line: ``captum-spes explain-dataset`` and ``captum-spes evaluate``.
"""

from captum_spes.dataset.evaluate import CorpusCurve, CorpusEvaluation, EvaluationSettings, evaluate_dataset
from captum_spes.dataset.manifest import ManifestError, Utterance, read_hf_dataset, read_manifest
from captum_spes.dataset.runner import ExplainSettings, RunSummary, explain_dataset
from captum_spes.dataset.store import DatasetStore, SettingsMismatchError, utterance_key

__all__ = [
    "Utterance",
    "ManifestError",
    "read_manifest",
    "read_hf_dataset",
    "ExplainSettings",
    "RunSummary",
    "explain_dataset",
    "EvaluationSettings",
    "CorpusCurve",
    "CorpusEvaluation",
    "evaluate_dataset",
    "DatasetStore",
    "SettingsMismatchError",
    "utterance_key",
]
