"""Print the README's benchmark table (markdown) from a processors benchmark JSON.

    python scripts/benchmark_table.py [benchmarks/results/latest.json]

Rows at B=8 (the batch the targets name), both vocabulary sizes: our time, ``scores.clone()``
(the memory floor), the Hugging Face equivalent, the two ratios, and, for the masks, the
fastest bare PyTorch kernel that computes the same result (``floor / clone``: what any
processor built from PyTorch ops could reach at best).
"""

import json
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/latest.json")
document = json.loads(path.read_text())
print("| processor (B=8) | V | ours µs | clone µs | ours / clone | bare-kernel floor / clone | HF µs | HF / ours |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for row in document["rows"]:
    if row["batch"] != 8:
        continue
    hf = f"{row['hf_us']:,.0f} | {row['hf_over_ours']:.2f}" if row.get("hf_us") else "– | –"
    floor = f"{row['floor_x_clone']:.2f}" if row.get("floor_x_clone") else "–"
    print(
        f"| {row['case']} | {row['vocab']:,} | {row['ours_us']:,.0f} | {row['clone_us']:,.0f} | {row['x_clone']:.2f} "
        f"| {floor} | {hf} |"
    )
