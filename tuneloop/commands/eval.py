"""`tuneloop eval ...` and `tuneloop ab ...`: offline evals, the gate, k-shot baselines, live A/B reports.

    tuneloop eval SUITE --model NAME [--base-url URL] [--k-shot K]     run one suite (same as `eval run`)
    tuneloop eval baseline SUITE --model ADAPTER --base-model BASE -k 3  adapter vs k-shot vs zero-shot base
    tuneloop eval compare --champion RUN --challenger RUN [...]        promotion gate + report
    tuneloop eval report RUN [RUN ...] --out DIR                       side-by-side report of finished runs
    tuneloop eval list [--dir DIR]                                     suites (shipped, DIR's) and metrics
    tuneloop ab report EXPERIMENT [--db URL]                           live A/B statistics from the log
    tuneloop ab sample-size --rate 0.1 --mde 0.02                      requests per arm for a planned test

SUITE is a shipped suite's name or the path of a suite YAML file (your own suites live anywhere; relative
dataset paths in it resolve against its folder).

Exit codes: 0 success (gate passed), 1 the result is negative or partial (gate failed, endpoint went down
mid-run, one-arm experiment), 2 bad input (suite, run folder, experiment, options).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

console = Console()
err = Console(stderr=True, soft_wrap=True)


class _DefaultToRun(TyperGroup):
    """`tuneloop eval SUITE ...` means `tuneloop eval run SUITE ...` when SUITE is not a sub-command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # a typer (vendored click) Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_DefaultToRun,
    no_args_is_help=True,
    help="Offline evals: run suites against any OpenAI-compatible endpoint, gate, report.",
)
ab_app = typer.Typer(no_args_is_help=True, help="Live A/B experiments: statistics from the request log.")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="tuneloop settings YAML (default endpoint/db).")
]


def register(app: typer.Typer) -> None:
    """Mount `eval` and `ab` on the root CLI."""
    app.add_typer(eval_app, name="eval")
    app.add_typer(ab_app, name="ab")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _input_errors() -> tuple[type[BaseException], ...]:
    from evals.errors import EvalError

    return (EvalError, FileNotFoundError, ValueError)


def _default_base_url(config: Path | None) -> str:
    try:
        from tuneloop.settings import load_settings

        settings = load_settings(config)
        return f"http://{settings.host}:{settings.port}/v1"
    except Exception:  # settings are optional for evals: any endpoint works
        return "http://127.0.0.1:8000/v1"


def _default_db(config: Path | None) -> str:
    from tuneloop.settings import load_settings

    return load_settings(config).serving.resolved_database_url()


def _print_run(run: Any) -> None:
    from evals.report import fmt, fmt_ci

    table = Table(title=f"{run.suite} · {run.label} · {run.n_ok}/{run.planned} answered")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI")
    for slice_name in run.slices():
        table.add_column(slice_name, justify="right")
    for metric, per in run.summaries.items():
        overall = per.get(run.ALL)
        row = [
            metric,
            fmt(overall.value) if overall else "–",
            fmt_ci(overall.low, overall.high) if overall else "–",
        ]
        row += [fmt(per[s].value) if s in per else "–" for s in run.slices()]
        table.add_row(*row)
    console.print(table)
    for metric, result in run.threshold_results.items():
        mark = "[green]ok[/green]" if result["passed"] else "[red]below threshold[/red]"
        console.print(f"threshold {metric} >= {result['threshold']}: {fmt(result['value'])} {mark}")
    served = ", ".join(f"{k} ×{v}" for k, v in run.served_by().items())
    if served:
        console.print(f"served by: {served}")


def _report_partial(run: Any) -> None:
    if run.complete:
        return
    err.print(
        f"[yellow]partial run:[/yellow] {run.n_ok}/{run.planned} examples answered, {run.n_failed} failed"
        + (f"; stopped: {run.stop_reason}" if run.stop_reason else "")
    )
    for message, count in run.error_counts().items():
        err.print(f"  {count} × {message}")
    if run.path:
        err.print(f"Results so far are kept in {run.path}; run the same command again to resume.")


@eval_app.command("run")
def run_cmd(
    suite: Annotated[
        str, typer.Argument(help="Shipped suite name (see `tuneloop eval list`) or a suite YAML path.")
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model name to request (base, adapter or alias).")
    ],
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")
    ] = None,
    k_shot: Annotated[
        int | None, typer.Option("--k-shot", "-k", help="Few-shot examples from the train split.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for run results (one sub-folder per run).")] = Path(
        "eval-runs"
    ),
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N examples.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore earlier partial results of this run.")
    ] = False,
    judge_model: Annotated[str | None, typer.Option(help="Judge model for llm_judge metrics.")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="OPENAI_API_KEY", help="Bearer token if required.")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Sent as `user` (sticky A/B routing on tuneloop).")] = None,
    report: Annotated[
        bool, typer.Option(help="Write an HTML/Markdown/JSON report into the run folder.")
    ] = True,
    config: ConfigOpt = None,
) -> None:
    """Evaluate MODEL on SUITE (resumable; results per example in OUT/<run>)."""
    from evals.runner import RunOptions, run_suite

    url = base_url or _default_base_url(config)
    try:
        run = run_suite(
            suite,
            model,
            url,
            k_shot=k_shot,
            out_dir=out,
            limit=limit,
            api_key=api_key,
            user=user,
            judge_model=judge_model,
            options=RunOptions(concurrency=concurrency, progress=True, resume=not fresh),
            console=err,
        )
    except _input_errors() as exc:
        raise _fail(str(exc)) from exc
    _print_run(run)
    if report and run.path:
        from evals.report import eval_report, write_report

        files = write_report(eval_report([run]), Path(run.path) / "report")
        console.print(f"report: {files.html}")
    console.print(f"results: {run.path}")
    _report_partial(run)
    if not run.complete:
        raise typer.Exit(1)


@eval_app.command("baseline")
def baseline_cmd(
    suite: Annotated[str, typer.Argument(help="Suite name or YAML path (needs a train split for k-shot).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The fine-tuned model (adapter or alias).")],
    base_model: Annotated[str, typer.Option(help="The base model name on the same endpoint.")],
    k_shot: Annotated[int, typer.Option("--k-shot", "-k", help="Shots for the few-shot baseline.")] = 3,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for run results and the report.")] = Path("eval-runs"),
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N examples.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    judge_model: Annotated[str | None, typer.Option(help="Judge model for llm_judge metrics.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Is fine-tuning worth it? Zero-shot base vs k-shot base vs the adapter, side by side."""
    from evals.baseline import run_baselines
    from evals.report import eval_report, write_report
    from evals.runner import RunOptions

    url = base_url or _default_base_url(config)
    try:
        runs = run_baselines(
            suite,
            base_model=base_model,
            model=model,
            base_url=url,
            k_shot=k_shot,
            out_dir=out,
            limit=limit,
            judge_model=judge_model,
            options=RunOptions(concurrency=concurrency, progress=True),
        )
    except _input_errors() as exc:
        raise _fail(str(exc)) from exc
    for run in runs:
        _print_run(run)
    files = write_report(
        eval_report(runs, title=f"Is fine-tuning worth it? {runs[0].suite}"),
        out / f"{runs[0].suite}__baseline_report",
    )
    console.print(f"report: {files.html}")
    for run in runs:
        _report_partial(run)
    if not all(r.complete for r in runs):
        raise typer.Exit(1)


def _parse_policy(
    target: list[str],
    regression: list[str],
    margin: float | None,
    min_improvement: float | None,
    metric: str | None,
    confidence: float,
    min_pairs: int,
    allow_partial: bool,
) -> Any:
    from evals.gate import GatePolicy

    return GatePolicy(
        target=tuple(target),
        regression=tuple(regression),
        margin=margin,
        min_improvement=min_improvement,
        metric=metric,
        confidence=confidence,
        min_pairs=min_pairs,
        require_complete=not allow_partial,
    )


@eval_app.command("compare")
def compare_cmd(
    champion: Annotated[
        list[Path], typer.Option("--champion", help="Champion run folder (repeat per suite).")
    ],
    challenger: Annotated[
        list[Path], typer.Option("--challenger", help="Challenger run folder (repeat per suite).")
    ],
    target: Annotated[
        list[str] | None, typer.Option(help="Scope that must improve: SUITE or SUITE/SLICE.")
    ] = None,
    regression: Annotated[list[str] | None, typer.Option(help="Scope that must not regress.")] = None,
    margin: Annotated[float | None, typer.Option(help="Non-inferiority margin (metric units).")] = None,
    min_improvement: Annotated[
        float | None, typer.Option(help="Target CI lower end must exceed this.")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Decide on this metric (default: each suite's gate metric).")
    ] = None,
    confidence: Annotated[float, typer.Option(help="Confidence level of the paired bootstrap CIs.")] = 0.95,
    min_pairs: Annotated[int, typer.Option(help="Fewer paired examples in a scope fails it.")] = 5,
    allow_partial: Annotated[bool, typer.Option(help="Do not fail incomplete runs.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the report here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the GateDecision JSON here.")] = None,
) -> None:
    """Promotion gate: challenger vs champion on the same examples (exit 0 = pass, 1 = fail)."""
    from evals.gate import gate
    from evals.report import eval_report, write_report
    from evals.results import RunResult, write_text_atomic

    try:
        champs = [RunResult.load(p) for p in champion]
        challs = [RunResult.load(p) for p in challenger]
        decision = gate(
            champs,
            challs,
            _parse_policy(
                target or [],
                regression or [],
                margin,
                min_improvement,
                metric,
                confidence,
                min_pairs,
                allow_partial,
            ),
        )
    except _input_errors() as exc:
        raise _fail(str(exc)) from exc
    table = Table(title="Promotion gate")
    for column in ("check", "scope", "metric", "delta", "CI", "result"):
        table.add_column(column)
    for check in decision.checks:
        ci = f"[{check.ci_low:+.3f}, {check.ci_high:+.3f}]" if check.ci_low is not None else ""
        delta = f"{check.delta:+.3f}" if check.delta is not None else ""
        table.add_row(
            check.kind,
            check.scope,
            check.metric,
            delta,
            ci,
            "[green]pass[/green]" if check.passed else f"[red]FAIL[/red] {check.reason}",
        )
    console.print(table)
    console.print(("[bold green]" if decision.passed else "[bold red]") + decision.summary)
    if json_out:
        write_text_atomic(json_out, decision.to_json())
    if out:
        files = write_report(
            eval_report([*champs, *challs], decision=decision, title="Promotion gate report"), out
        )
        console.print(f"report: {files.html}")
    if not decision.passed:
        raise typer.Exit(1)


@eval_app.command("report")
def report_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders; the first run of each suite is the baseline.")
    ],
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("eval-report"),
    title: Annotated[str | None, typer.Option(help="Report title.")] = None,
) -> None:
    """Side-by-side HTML/Markdown/JSON report of finished runs (paired deltas against the first run)."""
    from evals.report import eval_report, write_report
    from evals.results import RunResult

    try:
        loaded = [RunResult.load(p) for p in runs]
        files = write_report(eval_report(loaded, title=title), out)
    except _input_errors() as exc:
        raise _fail(str(exc)) from exc
    console.print(f"report: {files.html}")


def _suite_table(title: str, suites: list[tuple[str, str | Path]], *, files: bool) -> tuple[Table, list[str]]:
    """A table of suites (label, name or path) and one line per suite that fails to load (its row
    says `error`)."""
    from evals.suite import load_suite, load_suite_data

    table = Table(title=title)
    columns = ("file", "suite") if files else ("suite",)
    for column in (*columns, "task", "eval / train", "metrics", "gate role"):
        table.add_column(column, no_wrap=column in ("suite", "file"))
    problems: list[str] = []
    for label, ref in suites:
        try:
            suite = load_suite(ref, check_data=False)
            data = load_suite_data(suite)
        except _input_errors() as exc:
            message = str(exc)
            problems.append(message if message.startswith(label) else f"{label}: {message}")
            table.add_row(*((label, "") if files else (label,)), "[red]error[/red]", "", "", "")
            continue
        table.add_row(
            *((label, suite.name) if files else (label,)),
            suite.task,
            f"{len(data.eval_examples)} / {len(data.train_examples)}",
            ", ".join(s.name for s in suite.metric_specs()),
            suite.gate.role,
        )
    return table, problems


@eval_app.command("list")
def list_cmd(
    dirs: Annotated[
        list[Path] | None,
        typer.Option("--dir", help="Also list the suite files (*.yaml, *.yml) in this folder (repeatable)."),
    ] = None,
) -> None:
    """Shipped suites, the suites in --dir folders (task, examples, metrics), and registered metric kinds.

    Exit code 2 when a --dir folder is missing or one of its suites does not load (the row shows why)."""
    from evals.metrics import metric_kinds
    from evals.suite import builtin_suite_names, suite_files

    shipped, problems = _suite_table(
        "Shipped eval suites", [(name, name) for name in builtin_suite_names()], files=False
    )
    console.print(shipped)
    for folder in dirs or []:
        try:
            found = suite_files(folder)
        except _input_errors() as exc:
            raise _fail(str(exc)) from exc
        if not found:
            console.print(f"[yellow]no suite files (*.yaml, *.yml) in {folder}[/yellow]")
            continue
        table, bad = _suite_table(f"Suites in {folder}", [(str(p), p) for p in found], files=True)
        console.print(table)
        problems += bad
    console.print("metric kinds: " + ", ".join(metric_kinds()))
    for problem in problems:
        err.print(f"[red]error:[/red] {problem}")
    if problems:
        raise _fail(f"{len(problems)} suite(s) failed to load")


def _parse_weights(raw: str | None) -> dict[str, float] | None:
    if not raw:
        return None
    weights: dict[str, float] = {}
    for part in raw.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--weights wants arm=weight pairs separated by commas, got {part!r}")
        weights[name.strip()] = float(value)
    return weights


@ab_app.command("report")
def ab_report_cmd(
    experiment: Annotated[
        str, typer.Argument(help="Experiment name (the `experiment` column of the request log).")
    ],
    db: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of the request log (default: from settings).")
    ] = None,
    control: Annotated[
        str | None, typer.Option(help="Control arm (default: champion/control/a, else first).")
    ] = None,
    primary: Annotated[
        str | None, typer.Option(help="Primary outcome, e.g. score:judge or thumbs_up_rate.")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Intended split for the SRM check: champion=0.9,challenger=0.1.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="False-positive rate.")] = 0.05,
    mde: Annotated[float | None, typer.Option(help="Minimum effect worth detecting (sample size).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write HTML/Markdown/JSON report here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Per-arm outcomes, tests, always-valid sequential decision and SRM check for a live experiment."""
    from evals.ab import ab_report
    from evals.report import ab_document, fmt, write_report

    try:
        url = db or _default_db(config)
        report = ab_report(
            experiment,
            url,
            control=control,
            primary=primary,
            weights=_parse_weights(weights),
            alpha=alpha,
            mde=mde,
        )
    except _input_errors() as exc:
        raise _fail(str(exc)) from exc
    if json_out:
        print(report.to_json())
    else:
        table = Table(title=f"Experiment {experiment}: arms")
        for column in (
            "arm",
            "requests",
            "error rate",
            "thumbs-up",
            "latency p50 (ms)",
            *([report.primary] if report.primary else []),
        ):
            table.add_column(column)
        for arm in report.arms:
            row = [
                arm.arm,
                str(arm.requests),
                fmt(arm.values["error_rate"]),
                fmt(arm.values["thumbs_up_rate"]),
                fmt(arm.values["latency_p50_ms"], 1),
            ]
            if report.primary:
                row.append(fmt(arm.values.get(report.primary)))
            table.add_row(*row)
        console.print(table)
        for comparison in report.comparisons:
            tests = Table(title=f"{comparison.arm} vs {comparison.control}")
            for column in ("outcome", "diff", "CI", "p", "always-valid p", "verdict"):
                tests.add_column(column)
            for o in comparison.outcomes:
                tests.add_row(
                    o.outcome,
                    f"{o.diff:+.4g}",
                    f"[{o.ci_low:+.3g}, {o.ci_high:+.3g}]",
                    f"{o.p_value:.3g}",
                    f"{o.sequential_p:.3g}",
                    o.verdict,
                )
            console.print(tests)
        for problem in report.problems:
            err.print(f"[yellow]warning:[/yellow] {problem}")
        console.print(f"[bold]{report.recommendation}")
    if out:
        files = write_report(ab_document(report), out)
        console.print(f"report: {files.html}")
    if len(report.arms) < 2:
        raise typer.Exit(1)


@ab_app.command("sample-size")
def sample_size_cmd(
    mde: Annotated[float, typer.Option(help="Smallest effect worth detecting (absolute).")],
    rate: Annotated[float | None, typer.Option(help="Control rate (for a rate outcome).")] = None,
    sd: Annotated[float | None, typer.Option(help="Outcome standard deviation (for a mean outcome).")] = None,
    alpha: Annotated[float, typer.Option(help="Two-sided false-positive rate.")] = 0.05,
    power: Annotated[float, typer.Option(help="Power.")] = 0.8,
    ratio: Annotated[float, typer.Option(help="Treatment / control traffic ratio.")] = 1.0,
) -> None:
    """Requests per arm for a fixed-horizon test of a rate (--rate) or a mean (--sd)."""
    from evals.stats.fixed_horizon import sample_size_means, sample_size_proportions

    try:
        if (rate is None) == (sd is None):
            raise ValueError("pass exactly one of --rate (rate outcome) or --sd (mean outcome)")
        size = (
            sample_size_proportions(rate, mde, alpha=alpha, power=power, ratio=ratio)
            if rate is not None
            else sample_size_means(sd or 0.0, mde, alpha=alpha, power=power, ratio=ratio)
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    console.print(
        json.dumps(
            {
                "n_control": size.n_control,
                "n_treatment": size.n_treatment,
                "total": size.total,
                "effect_size": round(size.effect_size, 6),
                "alpha": alpha,
                "power": power,
            }
        )
    )
