#!/usr/bin/env python3
"""Average several ``captum-spes compare`` CSV tables (one per clip) into one Markdown table.

    for c in 0880 0930 0870 0890 0920; do captum-spes compare <clip $c> --out runs/$c ...; done
    python scripts/aggregate_compare.py runs/*/comparison.csv
"""
import csv
import sys
from collections import defaultdict

COLUMNS = [
    ("forward_passes", "forward", "{:.0f}"),
    ("backward_passes", "backward", "{:.0f}"),
    ("seconds", "seconds", "{:.0f}"),
    ("deletion_auc", "deletion WER AUC ↑", "{:.1f}"),
    ("insertion_auc", "insertion WER AUC ↓", "{:.1f}"),
    ("size_auc", "size AUC ↓", "{:.1f}"),
    ("plausibility_mass", "mass in word span ↑", "{:.3f}"),
    ("plausibility_pointing", "pointing game ↑", "{:.2f}"),
]


def main(paths):
    values = defaultdict(lambda: defaultdict(list))
    order = []
    for path in paths:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row["method"] not in order:
                    order.append(row["method"])
                for key, _, _ in COLUMNS:
                    if row.get(key) not in (None, "", "nan"):
                        values[row["method"]][key].append(float(row[key]))
    print(f"Mean over {len(paths)} clips.\n")
    print("| method | " + " | ".join(h for _, h, _ in COLUMNS) + " |")
    print("|:---|" + "---:|" * len(COLUMNS))
    for method in order:
        cells = []
        for key, _, fmt in COLUMNS:
            xs = values[method][key]
            cells.append(fmt.format(sum(xs) / len(xs)) if xs else "–")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
