"""Print the README's benchmark table (markdown) from a processors benchmark JSON.

    python scripts/benchmark_table.py [benchmarks/results/latest.json]

Rows at B=8 (the batch the targets name), both vocabulary sizes: our time, ``scores.clone()``
(the memory floor), the Hugging Face equivalent, and the two ratios.
"""

import json
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/latest.json")
document = json.loads(path.read_text())
print("| processor (B=8) | V | ours µs | clone µs | ours / clone | HF µs | HF / ours |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for row in document["rows"]:
    if row["batch"] != 8:
        continue
    hf = f"{row['hf_us']:,.0f} | {row['hf_over_ours']:.2f}" if row.get("hf_us") else "– | –"
    print(f"| {row['case']} | {row['vocab']:,} | {row['ours_us']:,.0f} | {row['clone_us']:,.0f} | {row['x_clone']:.2f} | {hf} |")
