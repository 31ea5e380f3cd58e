"""`tuneloop adapters ...` and `tuneloop experiments ...`: the registry from the command line.

These talk to the registry database directly (same settings as the service), so they work whether or
not the service runs; alias moves use the hot-swap protocol and wait for live replicas to load first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)

adapters_app = typer.Typer(help="Adapter versions and aliases in the registry.", no_args_is_help=True)
experiments_app = typer.Typer(
    help="A/B experiments (weighted, sticky, optional shadow).", no_args_is_help=True
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="tuneloop settings YAML.")]


def open_cli_registry(config: Path | None) -> Any:
    from serving.models import resolve_base_model
    from serving.runtime import open_registry
    from tuneloop.settings import load_settings

    settings = load_settings(config)
    base_path = resolve_base_model(settings.serving.base_model)
    base_id = settings.serving.served_model_id or base_path.name
    _, registry = open_registry(settings.serving, base_path, base_id)
    return registry, settings


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2) from exc


def _guard(fn: Any) -> Any:
    import functools

    from serving.errors import APIError
    from serving.registry.errors import RegistryError
    from tuneloop.settings import SettingsError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (RegistryError, APIError, SettingsError, FileNotFoundError, ValueError) as exc:
            _fail(exc)

    return wrapper


@adapters_app.command("list")
@_guard
def list_cmd(
    name: Annotated[str | None, typer.Argument()] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also retired and rejected versions (with why they were rejected).")
    ] = False,
) -> None:
    """List adapter versions (newest first) with their aliases."""
    registry, _ = open_cli_registry(config)
    versions = registry.list(name, include_retired=show_all)
    if as_json:
        print(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    columns = ["name", "version", "aliases", "rank", "parent", "created"]
    table = Table(*columns, *(["status", "reason"] if show_all else []))
    for v in versions:
        row = [
            v.name,
            v.version[:12],
            ",".join(v.aliases),
            str(v.rank),
            v.parent or "",
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        if show_all:
            row += [v.status, str(v.rejection.get("reason", "")) if v.rejection else ""]
        table.add_row(*row)
    console.print(table)


@adapters_app.command("register")
@_guard
def register_cmd(
    folder: Annotated[Path, typer.Argument(help="PEFT adapter folder.")],
    name: Annotated[str, typer.Option("--name", help="Adapter name.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at it (hot-swap).")] = None,
    parent: Annotated[str | None, typer.Option(help="Parent version 'name@version'.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Validate and register an adapter folder as a new immutable version."""
    from serving.hotswap import swap_alias

    registry, settings = open_cli_registry(config)
    version = registry.register_trained(folder, name, parent=parent)
    console.print(
        f"registered [bold]{version.short_ref}[/bold] (rank {version.rank}, {version.size_bytes} bytes)"
    )
    if alias:
        result = swap_alias(registry, name, alias, version.version, timeout_s=settings.serving.swap_timeout_s)
        console.print(f"{name}@{alias} → {version.version[:12]} on {len(result.replicas)} live replica(s)")
    print(version.ref)


@adapters_app.command("show")
@_guard
def show_cmd(
    ref: Annotated[str, typer.Argument(help="name or name@version/alias")], config: ConfigOpt = None
) -> None:
    """Show a version with its metadata and lineage."""
    registry, _ = open_cli_registry(config)
    name, _, v = ref.partition("@")
    version = registry.get(name, v or "champion")
    print(
        json.dumps(
            {
                **version.to_dict(),
                "lineage": [x.ref for x in registry.lineage(name, version.version)],
                "alias_history": [e.to_dict() for e in registry.alias_history(name)],
            },
            indent=2,
            default=str,
        )
    )


@adapters_app.command("alias")
@_guard
def alias_cmd(
    name: str, alias: str, version: str, config: ConfigOpt = None, reason: Annotated[str, typer.Option()] = ""
) -> None:
    """Point NAME@ALIAS at VERSION (hot-swap: live replicas load it before routing switches)."""
    from serving.hotswap import swap_alias

    registry, settings = open_cli_registry(config)
    r = swap_alias(registry, name, alias, version, reason=reason, timeout_s=settings.serving.swap_timeout_s)
    console.print(
        f"{name}@{alias}: {(r.from_version or '-')[:12]} → {r.to_version[:12]} "
        f"({len(r.replicas)} replica(s), {r.total_s:.2f} s)"
    )


@adapters_app.command("rollback")
@_guard
def rollback_cmd(
    name: str, alias: Annotated[str, typer.Option()] = "champion", config: ConfigOpt = None
) -> None:
    """Move NAME@ALIAS back to its previous version."""
    from serving.hotswap import rollback_alias

    registry, settings = open_cli_registry(config)
    r = rollback_alias(registry, name, alias, timeout_s=settings.serving.swap_timeout_s)
    console.print(f"{name}@{alias}: {(r.from_version or '-')[:12]} → {r.to_version[:12]} (rolled back)")


@adapters_app.command("remove")
@_guard
def remove_cmd(name: str, version: str, config: ConfigOpt = None) -> None:
    """Retire a version (refused while an alias or a running experiment uses it)."""
    registry, _ = open_cli_registry(config)
    removed = registry.remove(name, version)
    console.print(f"removed {removed.short_ref}")


@experiments_app.command("create")
@_guard
def exp_create(
    name: str,
    arm: Annotated[list[str], typer.Option("--arm", help="MODEL=WEIGHT, repeatable (≥ 2, or 1 + --shadow).")],
    shadow: Annotated[str | None, typer.Option(help="Shadow model: gets a copy, response discarded.")] = None,
    description: Annotated[str, typer.Option()] = "",
    intercept: Annotated[
        str | None, typer.Option(help="Take over this model name's traffic (canary).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create an experiment: clients send model=NAME (or the intercepted name) and are split by user."""
    arms = []
    for spec in arm:
        model, _, weight = spec.rpartition("=")
        if not model:
            raise typer.BadParameter(f"--arm {spec!r}: use MODEL=WEIGHT")
        try:
            arms.append((model, float(weight)))
        except ValueError as exc:
            raise typer.BadParameter(f"--arm {spec!r}: weight must be a number") from exc
    registry, _ = open_cli_registry(config)
    exp = registry.create_experiment(name, arms, shadow=shadow, description=description, intercept=intercept)
    print(json.dumps(exp.to_dict(), indent=2, default=str))


@experiments_app.command("list")
@_guard
def exp_list(config: ConfigOpt = None) -> None:
    """List experiments."""
    registry, _ = open_cli_registry(config)
    table = Table("name", "status", "arms", "shadow", "created")
    for e in registry.list_experiments():
        arms = ", ".join(f"{a.model}={a.weight:g}" for a in e.arms)
        table.add_row(e.name, e.status, arms, e.shadow.model if e.shadow else "", str(e.created_at)[:19])
    console.print(table)


@experiments_app.command("stop")
@_guard
def exp_stop(name: str, config: ConfigOpt = None) -> None:
    """Stop an experiment (its name stops resolving)."""
    registry, _ = open_cli_registry(config)
    registry.stop_experiment(name)
    console.print(f"stopped {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(adapters_app, name="adapters")
    app.add_typer(experiments_app, name="experiments")
