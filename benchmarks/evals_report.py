"""Benchmark: time to produce a full A/B report for 1,000 logged requests per arm (SQLite request log).

    python -m benchmarks.evals_report [--per-arm 1000] [--repeats 3]

Writes synthetic traffic (2 arms x N requests, ~30% with feedback, a score per answered request) into a
temporary SQLite file in the shared request-log schema, then times, end to end, what `tuneloop ab report
EXPERIMENT --out DIR` does: read the log, compute per-arm outcomes, fixed-horizon tests, the mSPRT path
for every outcome, SRM and sample size, draw the plots, and write HTML + Markdown + JSON. The baseline
measured in the same run is the bare read of the same rows (requests + feedback + scores) with SQLAlchemy,
i.e. what any report must at least pay. Writes benchmarks/results/evals_report.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.common import write_results
from common.log_schema import feedback_table, requests_table, scores_table
from evals.ab import ab_report
from evals.datasets.request_log import SyntheticArm, write_synthetic_experiment
from evals.report import ab_document, write_report


def read_rows(engine: sa.Engine, experiment: str) -> int:
    """Baseline: fetch the experiment's requests, feedback and scores, nothing else."""
    r, f, s = requests_table, feedback_table, scores_table
    in_experiment = r.c.experiment == experiment
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r).where(in_experiment)).all()
        fb = conn.execute(
            sa.select(f).select_from(f.join(r, r.c.id == f.c.request_id)).where(in_experiment)
        ).all()
        sc = conn.execute(
            sa.select(s).select_from(s.join(r, r.c.id == s.c.request_id)).where(in_experiment)
        ).all()
    return len(rows) + len(fb) + len(sc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-arm", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evals-report-bench-") as tmp:
        engine = sa.create_engine(f"sqlite:///{Path(tmp) / 'log.db'}")
        arms = [SyntheticArm("champion"), SyntheticArm("challenger", score_mean=0.73, latency_median_ms=430)]
        written = write_synthetic_experiment(engine, "bench", arms, 2 * args.per_arm, seed=0)
        # Warm-up: imports, matplotlib font cache.
        write_report(ab_document(ab_report("bench", engine)), Path(tmp) / "warmup")
        baseline, full, stages = [], [], []
        for i in range(args.repeats):
            started = time.perf_counter()
            n_rows = read_rows(engine, "bench")
            baseline.append(time.perf_counter() - started)

            started = time.perf_counter()
            report = ab_report("bench", engine)
            analysed = time.perf_counter()
            document = ab_document(report)
            drawn = time.perf_counter()
            files = write_report(document, Path(tmp) / f"report-{i}")
            done = time.perf_counter()
            full.append(done - started)
            stages.append(
                {"analysis_s": analysed - started, "plots_s": drawn - analysed, "write_s": done - drawn}
            )
        sizes = {p.name: p.stat().st_size for p in (files.html, files.markdown, files.json)}
    median_full = statistics.median(full)
    median_base = statistics.median(baseline)
    result: dict[str, Any] = {
        "benchmark": "evals_report",
        "requests_per_arm": args.per_arm,
        "requests_written": written,
        "rows_read": n_rows,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "full_report_s_median": median_full,
        "full_report_s_all": full,
        "stages_s_median": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
        "baseline_read_rows_s_median": median_base,
        "ratio_full_report_to_bare_read": median_full / median_base,
        "file_sizes_bytes": sizes,
    }
    st = result["stages_s_median"]
    md = [
        "# A/B report time",
        "",
        f"{args.per_arm} logged requests per arm (2 arms, SQLite, with feedback and scores); median of "
        f"{args.repeats}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}.",
        "",
        "| | seconds |",
        "|---|---|",
        f"| baseline: read the rows (requests + feedback + scores) | {median_base:.3f} |",
        f"| full report: analysis + plots + HTML/MD/JSON | {median_full:.3f} |",
        f"| - analysis (tests, mSPRT paths, SRM, sample size) | {st['analysis_s']:.3f} |",
        f"| - plots (3 figures) | {st['plots_s']:.3f} |",
        f"| - writing files | {st['write_s']:.3f} |",
        "",
        f"**Full report: {median_full:.2f} s, {result['ratio_full_report_to_bare_read']:.1f}x the bare "
        f"read.** HTML {sizes['report.html'] // 1024} KiB (self-contained).",
        "",
    ]
    write_results("evals_report", result, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
