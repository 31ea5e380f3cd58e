"""`tuneloop train CONFIG.yaml [--register NAME]`: fine-tune a LoRA adapter from a training config.

The base model defaults to the prepared default model (`serving.models.resolve_base_model`), so example
configs do not name a path. The run goes through Ray (GPU when the cluster has one, CPU otherwise) unless
`--no-ray`; a rich progress bar shows loss, validation loss and tokens/s. On success the adapter folder
is printed (last line of stdout); with `--register NAME` it is handed to the adapter registrar, which the
CLI composition root sets with `set_registrar(fn)` (fn(adapter_dir, name, manifest) -> version ref).
Exit codes: 0 success, 1 the run failed / was cancelled, 2 invalid config or data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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


def _resolve_base(overrides: dict[str, Any], config: Path, base_model: str | None) -> None:
    """Fill in base_model (flag > --set > config file > the default model) as a local folder."""
    import yaml

    from serving.models import resolve_base_model

    spec = base_model or overrides.get("base_model")
    if spec is None and config.is_file():
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            loaded = {}  # load_config reports the parse error with the file name
        spec = loaded.get("base_model") if isinstance(loaded, dict) else None
        if spec is not None and str(spec).lower() not in ("default", "smollm2-135m-instruct"):
            return  # an explicit folder in the config; training validates it
    overrides["base_model"] = str(resolve_base_model(None if spec is None else str(spec)))


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
) -> None:
    """Fine-tune a LoRA/QLoRA adapter (GPU through Ray when the cluster has one, else CPU)."""
    from training.api import train
    from training.errors import TrainingError

    overrides = parse_overrides(set_ or [])
    try:
        _resolve_base(overrides, config, base_model)
    except ValueError as exc:
        err.print(f"[red]error:[/red] base_model: {exc}")
        raise typer.Exit(2) from exc
    if register_as is not None and _registrar is None:
        err.print("[red]error:[/red] --register is not available: no adapter registrar is configured")
        raise typer.Exit(2)

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
            ref = _registrar(result.adapter_dir, register_as, result.manifest)
        except (TrainingError, ValueError, RuntimeError) as exc:
            err.print(f"[red]registration failed[/red]: {exc} (the adapter stays at {result.adapter_dir})")
            raise typer.Exit(1) from exc
        err.print(f"registered {ref}")
    print(result.adapter_dir)


def register(app: typer.Typer) -> None:
    """Mount `train` on the root CLI (called by `tuneloop.cli`)."""
    app.command("train")(train_command)
