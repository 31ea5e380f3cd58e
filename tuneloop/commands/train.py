"""`tuneloop train CONFIG.yaml [--register NAME [--config SETTINGS]]`: fine-tune a LoRA adapter.

The base model defaults to the serving base model of the `--config` settings file when one is given (the
adapter is meant for that registry), else to the prepared default model
(`serving.models.resolve_base_model`), so example configs do not name a path. The run goes through Ray (GPU
when the cluster has one, CPU otherwise) unless `--no-ray`; a rich progress bar shows loss, validation loss
and tokens/s. On success the adapter folder is printed (last line of stdout); with `--register NAME` it is
handed to the adapter registrar, which the CLI composition root sets with `set_registrar(fn)`
(fn(adapter_dir, name, manifest) -> version ref). The registrar reads the tuneloop settings like every
command: `--config FILE` (checked before training starts, and set as `$TUNELOOP_CONFIG` while the
registrar runs), else `$TUNELOOP_CONFIG`, else the defaults.
Exit codes: 0 success, 1 the run failed / was cancelled, 2 invalid config, settings or data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from common.home import service_ray_address, tuneloop_home

__all__ = ["RegisterFn", "parse_overrides", "register", "set_registrar", "train_command"]

RegisterFn = Callable[[Path, str, dict[str, Any]], str]
"""(adapter folder, registry name, manifest) -> the registered version reference, e.g. 'support@3f2a...'."""

_registrar: RegisterFn | None = None
err = Console(stderr=True)


def set_registrar(fn: RegisterFn | None) -> None:
    """Install the function `--register NAME` calls (the lead wires the serving registry here)."""
    global _registrar
    _registrar = fn


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key.path=value` pairs; values are parsed as YAML scalars (numbers, booleans, null, lists)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def _resolve_base(
    overrides: dict[str, Any], config: Path, base_model: str | None, settings_base: str | None = None
) -> None:
    """Fill in base_model (flag > --set > config file > the settings' serving.base_model > the default
    model) as a local folder."""
    from common.settings import SettingsError, read_yaml_mapping
    from serving.models import resolve_base_model

    spec = base_model or overrides.get("base_model")
    if spec is None and config.is_file():
        try:
            loaded = read_yaml_mapping(config, what="training config")
        except SettingsError:
            loaded = {}  # load_config reports the problem with the file name
        spec = loaded.get("base_model")
        if spec is not None and str(spec).lower() not in ("default", "smollm2-135m-instruct"):
            return  # an explicit folder in the config; training validates it (relative to the config)
    if spec is None:
        spec = settings_base
    overrides["base_model"] = str(resolve_base_model(None if spec is None else str(spec)))


@contextmanager
def _settings_env(settings_file: Path | None) -> Iterator[None]:
    """`$TUNELOOP_CONFIG` set to `settings_file` (when given) for the duration, so the registrar - which
    opens the registry from the settings like every command - uses the file passed with --config."""
    if settings_file is None:
        yield
        return
    previous = os.environ.get("TUNELOOP_CONFIG")
    os.environ["TUNELOOP_CONFIG"] = str(settings_file.expanduser().resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TUNELOOP_CONFIG", None)
        else:
            os.environ["TUNELOOP_CONFIG"] = previous


def train_command(
    config: Annotated[Path, typer.Argument(help="Training config YAML (see training/configs/).")],
    register_as: Annotated[
        str | None, typer.Option("--register", metavar="NAME", help="Register the adapter under NAME.")
    ] = None,
    base_model: Annotated[
        str | None, typer.Option(help="'default' or a local model folder (overrides the config).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: --set train.max_steps=20.")
    ] = None,
    no_ray: Annotated[
        bool, typer.Option("--no-ray", help="Train in this process instead of a Ray task.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    settings_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="tuneloop settings YAML (registry, database, serving base model) for --register; "
            "default $TUNELOOP_CONFIG.",
        ),
    ] = None,
) -> None:
    """Fine-tune a LoRA/QLoRA adapter (GPU through Ray when the cluster has one, else CPU)."""
    from training.api import train
    from training.errors import TrainingError
    from tuneloop.settings import SettingsError, load_settings

    overrides = parse_overrides(set_ or [])
    if register_as is not None and _registrar is None:
        err.print("[red]error:[/red] --register is not available: no adapter registrar is configured")
        raise typer.Exit(2)
    settings_base: str | None = None
    home = tuneloop_home()
    if settings_file is not None:
        try:  # a broken settings file fails now, not after a long training run
            loaded = load_settings(settings_file)
        except SettingsError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        settings_base, home = loaded.serving.base_model, loaded.serving.home
    address = service_ray_address(home)
    if address is not None and not no_ray and not os.environ.get("RAY_ADDRESS"):
        os.environ["RAY_ADDRESS"] = address  # train in the running service's cluster: one Ray, warm workers
    try:
        _resolve_base(overrides, config, base_model, settings_base)
    except ValueError as exc:
        err.print(f"[red]error:[/red] base_model: {exc}")
        raise typer.Exit(2) from exc

    result = train(config, use_ray=not no_ray, progress=progress, overrides=overrides)
    if json_out:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    if not result.ok:
        assert result.error is not None
        err.print(f"[red]training {result.status}[/red] [{result.error.code}]: {result.error.message}")
        raise typer.Exit(2 if result.error.code in ("invalid_config", "invalid_data") else 1)
    m = result.metrics
    err.print(
        f"[green]done[/green] in {result.duration_s:.0f}s on {result.device}: {m.get('steps')} steps, loss "
        f"{m.get('train_loss_first', float('nan')):.3f} -> {m.get('train_loss_last', float('nan')):.3f}"
        + (f", val {m['final_eval_loss']:.3f}" if m.get("final_eval_loss") is not None else "")
    )
    assert result.adapter_dir is not None and result.manifest is not None
    if register_as is not None and _registrar is not None:
        try:
            with _settings_env(settings_file):
                ref = _registrar(result.adapter_dir, register_as, result.manifest)
        except (TrainingError, ValueError, RuntimeError) as exc:
            err.print(f"[red]registration failed[/red]: {exc} (the adapter stays at {result.adapter_dir})")
            raise typer.Exit(1) from exc
        err.print(f"registered {ref}")
    print(result.adapter_dir)


def register(app: typer.Typer) -> None:
    """Mount `train` on the root CLI (called by `tuneloop.cli`)."""
    app.command("train")(train_command)
