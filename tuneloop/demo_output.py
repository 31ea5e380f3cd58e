"""The demo's terminal story: rounded numbers, tables that fit (or wrap) at any width, library noise kept
out of it (in `<home>/demo.log`).

* `fmt_loss` (3 decimals), `fmt_p` (`0.0033`, `<0.001`), `fmt_stat` (4 significant digits) and
  `tidy_numbers` (rounds the long floats inside a message, e.g. a loop event's `p=0.00332225913621`);
* `print_summary(console, summary)`: the closing summary (scores table, drift table, outcome, lineage,
  timings, report path); columns fold instead of being cut, so it reads at 60, 80 or 200 columns and when
  piped (rich then assumes 80 columns, or `$COLUMNS`);
* `LibraryNoise(log_file)`: while the demo runs, what libraries print goes to the log file instead of the
  terminal: the Python loggers of ray, vllm, bitsandbytes, transformers, peft, torch, ... (their
  handlers are replaced, so even vLLM's stdout handler is caught), `warnings` (captured into logging), and
  everything written to file descriptor 2 - C++ logs of Ray's core worker in this process (raylet
  shutdown errors) and the stderr of every child process started meanwhile (Ray's raylet, GCS, workers,
  and through them vLLM's engine processes). `sys.stderr` becomes a `StoryStream`: what rich and
  tuneloop's own code write there (the training progress bar, the service's stop messages) reaches the
  terminal; what anything else writes there (a logging handler a library adds later, `warnings`, tqdm,
  a thread's traceback) goes to the log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = [
    "NOISY_LOGGERS",
    "LibraryNoise",
    "fmt_loss",
    "fmt_p",
    "fmt_stat",
    "print_summary",
    "tidy_numbers",
]

NOISY_LOGGERS = (
    "ray",
    "vllm",
    "bitsandbytes",
    "transformers",
    "peft",
    "trl",
    "torch",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "sentence_transformers",
    "filelock",
    "urllib3",
    "httpx",
    "httpcore",
    "evaluate",
    "py.warnings",
)
"""Loggers whose records go to the demo's log file, not the terminal."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_loss(value: Any) -> str:
    """A loss with 3 decimals (`2.736`); `?` when unknown."""
    number = _number(value)
    return "?" if number is None else f"{number:.3f}"


def fmt_p(value: Any) -> str:
    """A p-value for people: `<0.001` below 0.001, else 2 significant digits (`0.0033`, `0.05`, `0.5`)."""
    number = _number(value)
    if number is None:
        return "?"
    if number < 0.001:
        return "<0.001"
    return f"{number:.2g}"


def fmt_stat(value: Any) -> str:
    """A test statistic with 4 significant digits (`0.01235`, `12.35`)."""
    number = _number(value)
    return "?" if number is None else f"{number:.4g}"


_P_VALUE = re.compile(r"\bp\s*=\s*(-?\d+\.\d+(?:[eE]-?\d+)?|\d+[eE]-?\d+)")
_LONG_FLOAT = re.compile(r"(?<![\w.])(-?\d+\.\d{5,}(?:[eE][-+]?\d+)?)(?![\w.])")


def tidy_numbers(text: str) -> str:
    """`text` with p-values written as `p=0.0033` / `p<0.001` and other floats of 5+ decimals rounded to
    4 significant digits (library messages print raw floats)."""

    def p_value(match: re.Match[str]) -> str:
        shown = fmt_p(match.group(1))
        return f"p{shown}" if shown.startswith("<") else f"p={shown}"

    text = _P_VALUE.sub(p_value, text)
    return _LONG_FLOAT.sub(lambda m: fmt_stat(m.group(1)), text)


def _score(value: Any) -> str:
    number = _number(value)
    return "?" if number is None else f"{number:.3f}"


def _short_ref(ref: str) -> str:
    name, sep, version = ref.partition("@")
    return f"{name}@{version[:12]}" if sep else ref


def print_summary(console: Console, s: dict[str, Any]) -> None:
    """The demo's closing summary (see the module docstring); `s` is `run_demo`'s summary mapping."""
    console.rule("[bold]Summary[/bold]")
    suites = s.get("suites") or {}
    if suites:
        table = Table(title="Gate: challenger vs champion", title_justify="left", expand=False)
        table.add_column("suite (metric)", overflow="fold", min_width=10)
        table.add_column("champion", justify="right", no_wrap=True)
        table.add_column("challenger", justify="right", no_wrap=True)
        table.add_column("Δ points", justify="right", no_wrap=True)
        for suite, v in suites.items():
            c, n = _number(v.get("champion")), _number(v.get("challenger"))
            delta = f"{(n - c) * 100:+.1f}" if c is not None and n is not None else "?"
            table.add_row(escape(f"{suite} ({v.get('metric')})"), _score(c), _score(n), delta)
        console.print(table)
    drift = s.get("drift") or []
    if drift:
        table = Table(title="Drift at the trigger", title_justify="left", expand=False)
        table.add_column("detector", overflow="fold", min_width=6)
        table.add_column("statistic", justify="right", no_wrap=True)
        table.add_column("p-value", justify="right", no_wrap=True)
        table.add_column("threshold", justify="right", no_wrap=True)
        table.add_column("drifted", no_wrap=True)
        for d in drift:
            threshold = _number(d.get("threshold"))
            table.add_row(
                escape(str(d.get("detector"))),
                fmt_stat(d.get("statistic")),
                fmt_p(d.get("p_value")),
                "?" if threshold is None else f"{threshold:.4g}",
                "yes" if d.get("drifted") else "no",
            )
        console.print(table)
    t = s.get("timings", {})
    traffic = s.get("traffic") or {}
    champion = s.get("champion_after")
    now = escape(_short_ref(str(champion))) if champion else "-"
    console.print(f"outcome: [bold]{escape(str(s.get('outcome')))}[/bold]; champion now {now}")
    lineage = [_short_ref(str(x)) for x in s.get("lineage", [])]
    if lineage:
        console.print(f"lineage: {' ← '.join(lineage)}", markup=False)
    console.print(
        f"drift → outcome: {t.get('drift_to_outcome_s', 0) / 60:.1f} min; "
        f"whole demo: {t.get('total_s', 0) / 60:.1f} min"
    )
    console.print(f"traffic: {traffic.get('ok', 0)} ok, {traffic.get('failed', 0)} failed")
    for label, key in (("report", "report"), ("library log", "log")):
        if s.get(key):
            # a path is printed whole (soft wrap): the terminal may wrap it, nothing cuts it
            console.print(f"{label}: {s[key]}", soft_wrap=True, markup=False, highlight=False)


_STORY_DIRS = tuple(
    str(Path(module.__file__).resolve().parent) + os.sep
    for module in (sys.modules["rich"], sys.modules[__name__.rpartition(".")[0]])
    if module.__file__
)
"""Code whose writes to `sys.stderr` are the story: rich (progress bars, consoles) and tuneloop."""


class StoryStream(io.TextIOBase):
    """`sys.stderr` during the demo: writes from rich or tuneloop code reach the terminal, writes from
    anywhere else (logging handlers, warnings, tqdm, tracebacks of threads) go to the log file."""

    def __init__(self, terminal: TextIO, log: IO[bytes]) -> None:
        super().__init__()
        self.terminal = terminal
        self.log = log

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.terminal.encoding

    def _is_story(self) -> bool:
        frame = sys._getframe(2)  # the caller of write()
        filename = os.path.realpath(frame.f_code.co_filename) if frame is not None else ""
        return filename.startswith(_STORY_DIRS)

    def write(self, text: str) -> int:
        if self._is_story():
            return self.terminal.write(text)
        self.log.write(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.terminal.fileno()

    def writable(self) -> bool:
        return True


class LibraryNoise:
    """Send library output to `log_file` while the demo runs (see the module docstring).

    Use as a context manager, or `start()` / `stop()`. `stop()` restores file descriptor 2, `sys.stderr`,
    the loggers' handlers, levels and propagation, and `warnings` capture."""

    def __init__(self, log_file: Path, loggers: tuple[str, ...] = NOISY_LOGGERS) -> None:
        self.log_file = log_file
        self.loggers = loggers
        self._handler: logging.Handler | None = None
        self._saved_loggers: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []
        self._saved_fd: int | None = None
        self._saved_stderr: Any = None
        self._terminal: TextIO | None = None
        self._log_stream: IO[bytes] | None = None
        self._story: StoryStream | None = None

    def start(self) -> LibraryNoise:
        from serving.logging_setup import TEXT_FORMAT, RedactionFilter, RequestIdFilter

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        handler.addFilter(RequestIdFilter())
        handler.addFilter(RedactionFilter())
        self._handler = handler
        for name in self.loggers:
            logger = logging.getLogger(name)
            self._saved_loggers.append((logger, list(logger.handlers), logger.propagate, logger.level))
            for old in list(logger.handlers):
                logger.removeHandler(old)
            logger.addHandler(handler)
            logger.propagate = False
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
        logging.captureWarnings(True)
        self._redirect_fd2()
        return self

    def _redirect_fd2(self) -> None:
        try:
            stream = sys.stderr
            stream.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            return  # no real fd 2 (embedded interpreter): the loggers above are routed all the same
        try:
            terminal = os.fdopen(
                os.dup(saved),
                "w",
                buffering=1,
                encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="backslashreplace",
            )
            log_stream = open(self.log_file, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
            os.dup2(log_stream.fileno(), 2)
        except OSError:
            os.close(saved)
            return
        self._saved_fd, self._terminal, self._log_stream = saved, terminal, log_stream
        self._saved_stderr = sys.stderr
        self._story = StoryStream(terminal, log_stream)
        sys.stderr = self._story

    def stop(self) -> None:
        if self._saved_fd is not None:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(self._saved_fd, 2)
            os.close(self._saved_fd)
            self._saved_fd = None
            sys.stderr = self._saved_stderr
            self._story = None
            if self._terminal is not None:
                self._terminal.close()
            if self._log_stream is not None:
                self._log_stream.close()
        logging.captureWarnings(False)
        for logger, handlers, propagate, level in self._saved_loggers:
            if self._handler is not None:
                logger.removeHandler(self._handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
        self._saved_loggers = []
        if self._handler is not None:
            self._handler.close()
            self._handler = None

    def __enter__(self) -> LibraryNoise:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
