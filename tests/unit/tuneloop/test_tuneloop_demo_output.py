"""The demo's terminal story: rounded numbers, a summary that fits (or wraps) at 60, 80 and 200 columns and
when piped, and library noise sent to the log file instead of the terminal."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tuneloop.demo_output import LibraryNoise, fmt_loss, fmt_p, fmt_stat, print_summary, tidy_numbers

RAW_FLOAT = re.compile(r"\d\.\d{6,}")


def summary(home: str = "/root/.cache/tuneloop/demo/20261204-101500") -> dict[str, Any]:
    """A summary shaped like `run_demo`'s, with the raw floats the loop stores."""
    return {
        "home": home,
        "log": f"{home}/demo.log",
        "report": f"{home}/demo-report.html",
        "outcome": "promoted",
        "champion_after": "support@5be0c3a9d2f14e7788aa01bb2c3d4e5f60718293a4b5c6d7e8f9",
        "lineage": [
            "support@5be0c3a9d2f14e7788aa01bb2c3d4e5f60718293a4b5c6d7e8f9",
            "support@0a1b2c3d4e5f60718293a4b5c6d7e8f95be0c3a9d2f14e7788aa01bb",
        ],
        "suites": {
            "support_target": {"metric": "contains_answer", "champion": 0.0, "challenger": 0.4375},
            "support_regression": {
                "metric": "contains_answer",
                "champion": 0.6607142857142857,
                "challenger": 0.6785714285714286,
            },
        },
        "drift": [
            {
                "detector": "mmd",
                "statistic": 0.012345678912345678,
                "p_value": 0.0033222591362126247,
                "threshold": 0.01,
                "drifted": True,
            },
            {
                "detector": "adwin[reference]",
                "statistic": 0.41666666666666663,
                "p_value": 0.00012,
                "threshold": 0.01,
                "drifted": True,
            },
        ],
        "timings": {"drift_to_outcome_s": 412.7, "total_s": 1033.2},
        "traffic": {"ok": 412, "failed": 0},
    }


def render(width: int | None, **kwargs: Any) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, **kwargs)
    print_summary(console, summary())
    return out.getvalue()


# ------------------------------------------------------------------------------------------ numbers


def test_number_formats() -> None:
    assert fmt_loss(2.735943078994751) == "2.736" and fmt_loss(0.01821978949010372) == "0.018"
    assert fmt_loss(None) == "?" and fmt_loss("?") == "?" and fmt_loss(float("nan")) == "?"
    assert fmt_p(0.0033222591362126247) == "0.0033"
    assert fmt_p(0.000999) == "<0.001" and fmt_p(1e-12) == "<0.001" and fmt_p(0.0) == "<0.001"
    assert fmt_p(0.001) == "0.001" and fmt_p(0.05) == "0.05" and fmt_p(0.5) == "0.5" and fmt_p(1.0) == "1"
    assert fmt_p(None) == "?"
    assert fmt_stat(0.012345678912345678) == "0.01235" and fmt_stat(12.3456789) == "12.35"
    assert fmt_stat(1234567.0) == "1.235e+06" and fmt_stat(True) == "?"


def test_tidy_numbers_rounds_library_floats_only() -> None:
    message = (
        "drift tripped the policy (input drift mmd: p=0.0033222591362126247 <= 0.01, statistic 0.0123456789)"
    )
    assert (
        tidy_numbers(message)
        == "drift tripped the policy (input drift mmd: p=0.0033 <= 0.01, statistic 0.01235)"
    )
    assert tidy_numbers("quality drift: p=1e-05") == "quality drift: p<0.001"
    assert tidy_numbers("p = 0.000123") == "p<0.001"
    kept = "canary: challenger 0.438 vs champion 0.661; support@3f2a1b9c8d7e promoted in 12.5 s (v1.2.3)"
    assert tidy_numbers(kept) == kept


# ------------------------------------------------------------------------------------------ summary


@pytest.mark.parametrize("width", [60, 80, 200])
def test_summary_fits_the_width_with_rounded_numbers(width: int) -> None:
    text = render(width)
    path_lines = [line for line in text.splitlines() if line.startswith(("report:", "library log:"))]
    assert len(path_lines) == 2
    for line in text.splitlines():
        if line not in path_lines:
            assert len(line) <= width, f"{len(line)} > {width}: {line!r}"
    assert "…" not in text  # nothing is cut with an ellipsis
    assert not RAW_FLOAT.search(text), text
    assert "0.0033" in text and "<0.001" in text and "0.01235" in text and "0.4167" in text
    assert "adwin[" in text  # names are not read as rich markup (folded at 60 columns, whole at 80+)
    assert "adwin[reference]" in text or width < 80
    assert "+43.8" in text and "+1.8" in text and "0.661" in text and "0.679" in text
    # paths are printed whole, on one line, however narrow the terminal
    assert "report: /root/.cache/tuneloop/demo/20261204-101500/demo-report.html" in path_lines
    assert "support@5be0c3a9d2f1 ← support@0a1b2c3d4e5f" in text.replace("\n", " ") or width < 70
    words = " ".join(text.split())
    assert "promoted" in words and "412 ok, 0 failed" in words


def test_wide_summary_keeps_each_row_on_one_line() -> None:
    text = render(200)
    assert re.search(r"support_regression \(contains_answer\)\s+│\s+0\.661\s+│\s+0\.679\s+│\s+\+1\.8", text)
    assert re.search(r"mmd\s+│\s+0\.01235\s+│\s+0\.0033\s+│\s+0\.01\s+│\s+yes", text)


def test_a_long_suite_name_folds_instead_of_being_cut() -> None:
    data = summary()
    data["suites"] = {
        "a_suite_name_far_longer_than_any_column_can_hold_at_sixty": data["suites"]["support_target"]
    }
    out = io.StringIO()
    print_summary(Console(file=out, width=60, color_system=None), data)
    text = out.getvalue()
    assert all(
        len(line) <= 60 for line in text.splitlines() if not line.startswith(("report:", "library log:"))
    )
    assert "…" not in text
    cells = "".join(
        line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│") and "│" in line[1:]
    )
    assert "a_suite_name_far_longer_than_any_column_can_hold_at_sixty" in cells


@pytest.mark.parametrize(("columns", "width"), [(None, 80), ("60", 60)])
def test_piped_output_reads_well(monkeypatch: pytest.MonkeyPatch, columns: str | None, width: int) -> None:
    """Not a terminal: rich assumes 80 columns, or $COLUMNS; no line is cut, nothing is styled."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    text = render(None)
    assert "\x1b[" not in text
    for line in text.splitlines():
        if not line.startswith(("report:", "library log:")):
            assert len(line) <= width, line
    assert "library log: /root/.cache/tuneloop/demo/20261204-101500/demo.log" in text.splitlines()


def test_summary_without_a_run_still_prints() -> None:
    out = io.StringIO()
    print_summary(
        Console(file=out, width=60, color_system=None),
        {"outcome": "timeout", "timings": {}, "traffic": {"ok": 3, "failed": 1}},
    )
    assert "outcome: timeout" in out.getvalue() and "3 ok, 1 failed" in out.getvalue()


# ------------------------------------------------------------------------------------------ noise


def test_library_noise_goes_to_the_log_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ray_logger = logging.getLogger("ray")
    before = (list(ray_logger.handlers), ray_logger.propagate, ray_logger.level)
    log = tmp_path / "demo.log"
    late = logging.getLogger("some_library_imported_later")
    with LibraryNoise(log):
        logging.getLogger("ray._private.authentication").warning("Token authentication is disabled")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward (kernels)"
        )
        logging.getLogger("vllm.engine").info("vllm engine noise")
        late.addHandler(logging.StreamHandler(sys.stderr))  # a library configuring itself mid-demo
        late.warning("late handler noise")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library deprecation", DeprecationWarning, stacklevel=1)
        print("a library printing to stderr", file=sys.stderr)
        os.write(2, b"[raylet] shutdown error from C++\n")
        subprocess.run(
            [sys.executable, "-c", "import sys; sys.stderr.write('child process noise\\n')"], check=True
        )
        Console(stderr=True).print("the story's own stderr line (a progress bar)")
    late.handlers.clear()
    os.write(2, b"after: the terminal again\n")
    err = capfd.readouterr().err
    text = log.read_text()
    for noise in (
        "Token authentication is disabled",
        "kernels",
        "vllm engine noise",
        "late handler noise",
        "a library deprecation",
        "a library printing to stderr",
        "shutdown error from C++",
        "child process noise",
    ):
        assert noise in text, noise
        assert noise not in err, noise
    assert "the story's own stderr line" in err and "after: the terminal again" in err
    assert "the story's own stderr line" not in text
    assert (list(ray_logger.handlers), ray_logger.propagate, ray_logger.level) == before
    assert sys.stderr is not None and type(sys.stderr).__name__ != "StoryStream"
