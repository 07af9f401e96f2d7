#!/usr/bin/env python3
"""Checks a moe_bench report (bench.json) run on a device (--device): every
run's device bytes (llama.cpp's memory breakdown of the live context) equal
the dry run's prediction within 5 %, the MoE configurations hold fewer bytes
on the device than the baseline, and every run generated the same text.

    .ci/check_bench.py target/ci-bench/bench.json [...]
"""
import json
import sys


def check(path):
    report = json.load(open(path))
    runs = report["runs"]
    assert runs, f"{path}: no runs"
    totals = {}
    for run in runs:
        use = run.get("device_use")
        assert use, f"{path}: run of {run['config']} has no device figures"
        total = use["model_bytes"] + use["context_bytes"] + use["compute_bytes"]
        error = abs(use["predicted_bytes"] / total - 1.0)
        assert error <= 0.05, f"{path}: {run['config']}: predicted {use['predicted_bytes']} B, measured {total} B"
        totals.setdefault(run["config"], set()).add(total)
    for config, seen in totals.items():
        assert len(seen) == 1, f"{path}: {config} put different byte counts on the device: {seen}"
    base = totals.get("baseline")
    for config, seen in totals.items():
        if base and config != "baseline":
            assert max(seen) < min(base), f"{path}: {config} holds {seen} B, baseline {base} B"
    texts = {run["text"] for run in runs}
    assert len(texts) == 1, f"{path}: the text differs between runs: {texts}"
    print(f"{path}: {len(runs)} runs; device MiB " + ", ".join(
        f"{c} {min(s) / 2**20:.1f}" for c, s in totals.items()) + "; predictions within 5 %; one text")


for path in sys.argv[1:]:
    check(path)
