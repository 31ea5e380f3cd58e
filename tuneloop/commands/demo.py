"""`tuneloop demo` (the main job) and `tuneloop lineage`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        port: Annotated[int, typer.Option(help="HTTP port of the demo service.")] = 8000,
        home: Annotated[
            Path | None,
            typer.Option(
                help="State folder (default: a new one under ~/.cache/tuneloop/demo); library output "
                "(Ray, vLLM, transformers, child processes' stderr) goes to <home>/demo.log."
            ),
        ] = None,
        base_model: Annotated[str, typer.Option(help="'default' or a local HF model folder.")] = "default",
        requests: Annotated[int, typer.Option(help="Requests before the world changes.")] = 80,
        timeout: Annotated[
            float, typer.Option(help="Give up after this many seconds after the drift.")
        ] = 1800,
        seed: Annotated[int, typer.Option()] = 0,
    ) -> None:
        """The closed loop end to end: serve, drift, retrain, gate, canary, promote (CPU, 7-12 min)."""
        from tuneloop.demo import DemoOptions, default_home, run_demo

        def _terminate(*_: object) -> None:
            raise KeyboardInterrupt  # unwinds through run_demo's cleanup: the service drains and stops

        signal.signal(signal.SIGTERM, _terminate)
        opts = DemoOptions(
            home=home or default_home(),
            port=port,
            base_model=base_model,
            phase_a_requests=requests,
            timeout_s=timeout,
            seed=seed,
        )
        summary = run_demo(opts, console)
        if summary.get("outcome") not in ("promoted", "rolled_back", "rejected"):
            raise typer.Exit(1)

    @app.command()
    def lineage(
        ref: Annotated[str, typer.Argument(help="ADAPTER[@VERSION or alias]")],
        config: Annotated[Path | None, typer.Option()] = None,
    ) -> None:
        """The adapter's ancestry and the loop events that produced each version."""
        from monitoring.loop_store import LoopStore
        from tuneloop.commands.adapters import open_cli_registry

        registry, settings = open_cli_registry(config)
        name, _, v = ref.partition("@")
        chain = registry.lineage(name, v or "champion")
        store = LoopStore(settings.serving.resolved_database_url(), loop=f"{registry.base_model_id}/{name}")
        for version in chain:
            run_id = (version.metadata or {}).get("loop_run")
            console.print(
                f"[bold]{version.short_ref}[/bold] parent={version.parent or 'base'} "
                f"dataset={version.dataset_hash or '-'} created={version.created_at:%Y-%m-%d %H:%M}"
            )
            if run_id:
                for e in store.events(run_id):
                    console.print(f"   {e.at:%H:%M:%S} {e.kind:10s} {e.message}")
