"""`tuneloop init DATA.jsonl --adapter NAME`: scaffold a loop project folder from the user's examples.

The logic lives in `tuneloop.scaffold`; this module parses the options and prints the summary (a rich
table that wraps rather than cuts, and commands printed unwrapped, so piped output reads well too).
Exit codes: 0 written, 2 bad input data, options or target folder (the message names the problem).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["init_command", "print_result", "register"]

console = Console()
err = Console(stderr=True)


def print_result(result: object, out: Console) -> None:
    """The summary of a written project: what, where, the split, the metric and the commands in order."""
    from tuneloop.scaffold import InitResult

    assert isinstance(result, InitResult)
    out.print(f"[green]✓[/green] wrote {result.folder}", soft_wrap=True)
    slice_note = ""
    if result.slice_key:
        slice_note = f"; slices by {result.slice_key!r}" + (
            " (detected; --slice-key to choose another)" if result.slice_key_detected else ""
        )
    out.print(f"  {result.n_examples} examples, task {result.task}{slice_note}", soft_wrap=True, markup=False)
    if result.labels:
        out.print(f"  labels: {', '.join(result.labels)}", soft_wrap=True, markup=False)
    table = Table("slice", "train", "held out", "suite", title="Deterministic split", title_justify="left")
    for name, (train, held) in result.slices.items():
        if held == 0:
            suite = "-"
        elif result.target_slice is not None and name == result.target_slice:
            suite = "target"
        else:
            suite = "regression"
        table.add_row(name, str(train), str(held), suite)
    out.print(table)
    target = (
        f"target {result.n_target} ({result.slice_key}={result.target_slice}), "
        if result.target_slice
        else "no target suite, "
    )
    out.print(
        f"  suites: {target}regression {result.n_regression}; training: {result.n_train} examples",
        soft_wrap=True,
        markup=False,
    )
    out.print(f"  metric: {result.metric}: {result.metric_reason}", soft_wrap=True, markup=False)
    for warning in result.warnings:
        out.print(f"  [yellow]note:[/yellow] {warning}", soft_wrap=True)
    files = ", ".join(str(p.relative_to(result.folder)) for p in result.files)
    out.print(f"  files: {files}", soft_wrap=True, markup=False)
    out.print("[bold]Next[/bold] (in the folder; README.md has the same list):")
    out.print(f"  cd {result.folder}", soft_wrap=True, markup=False)
    for what, command in result.commands:
        out.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)
        out.print(f"    [dim]{what}[/dim]", soft_wrap=True)


def init_command(
    data: Annotated[
        Path, typer.Argument(help="JSONL of examples: chat records or input/label pairs.", dir_okay=False)
    ],
    adapter: Annotated[str, typer.Option("--adapter", help="The adapter name the loop keeps good.")],
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Project folder to write (default: ./ADAPTER-loop).")
    ] = None,
    slice_key: Annotated[
        str | None,
        typer.Option(
            "--slice-key",
            help="Field naming each example's slice (default: slice/category/intent/topic when every row "
            "has it).",
        ),
    ] = None,
    target_slice: Annotated[
        str | None,
        typer.Option("--target-slice", help="The slice the target suite holds (default: the smallest)."),
    ] = None,
    task: Annotated[
        Literal["chat", "classification"] | None,
        typer.Option("--task", help="chat or classification (default: detected from the outputs)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic train/suite split.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty folder (overwrites init's files only).")
    ] = False,
) -> None:
    """Scaffold a loop project from your examples: spec, training config, recipe, suites, settings."""
    from tuneloop.scaffold import InitError, InitOptions, scaffold

    try:
        result = scaffold(
            InitOptions(
                data=data,
                adapter=adapter,
                folder=folder,
                slice_key=slice_key,
                target_slice=target_slice,
                task=task,
                seed=seed,
                force=force,
            )
        )
    except InitError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
    print_result(result, console)


def register(app: typer.Typer) -> None:
    """Mount `init` on the root CLI (called by `tuneloop.cli`)."""
    app.command("init")(init_command)
