#!/usr/bin/env python3
"""Prints criterion's medians for one group as a table, each row with its ratio to the
baseline of the same thread count measured in the same run.

Usage: python3 benches/report.py GROUP [BASELINE]   (BASELINE defaults to plain_map)
Reads $CARGO_TARGET_DIR/criterion (or ./target/criterion).
"""
import json, os, sys
from pathlib import Path

group = sys.argv[1]
baseline = sys.argv[2] if len(sys.argv) > 2 else "plain_map"
root = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion" / group
rows = {}
for estimates in sorted(root.glob("*/*/new/estimates.json")):
    subject, variant = estimates.parts[-4], estimates.parts[-3]
    median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
    rows[(subject, variant)] = median_ns
print(f"| {group} | median per op | vs {baseline} |")
print("|---|---:|---:|")
for (subject, variant), ns in sorted(rows.items(), key=lambda r: (r[0][1], r[0][0] != baseline, r[0][0])):
    base = rows.get((baseline, variant))
    ratio = f"{ns / base:.2f}x" if base else "n/a"
    print(f"| {subject}/{variant} | {ns:,.0f} ns | {ratio} |")
