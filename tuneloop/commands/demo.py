"""`tuneloop demo` (the main job), `tuneloop loop`, `tuneloop status`, `tuneloop lineage`."""

from __future__ import annotations

import json
import signal
import threading
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
            Path | None, typer.Option(help="State folder (default: a new one under ~/.cache/tuneloop/demo).")
        ] = None,
        base_model: Annotated[str, typer.Option(help="'default' or a local HF model folder.")] = "default",
        requests: Annotated[int, typer.Option(help="Requests before the world changes.")] = 80,
        timeout: Annotated[
            float, typer.Option(help="Give up after this many seconds after the drift.")
        ] = 1800,
        seed: Annotated[int, typer.Option()] = 0,
    ) -> None:
        """The closed loop end to end: serve, drift, retrain, gate, canary, promote (CPU, ~15 min)."""
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
    def loop(
        adapter: Annotated[
            str, typer.Option(help="Adapter name whose champion the loop keeps good.")
        ] = "support",
        config: Annotated[Path | None, typer.Option(help="tuneloop settings YAML.")] = None,
        loop_config: Annotated[Path | None, typer.Option("--loop-config", help="Loop settings YAML.")] = None,
        service_url: Annotated[str, typer.Option()] = "http://127.0.0.1:8000",
        once: Annotated[bool, typer.Option(help="One tick, then exit.")] = False,
        ray_actor: Annotated[
            bool,
            typer.Option(
                "--ray",
                help="Run the loop as a detached Ray actor in the running cluster (beside the Serve app) "
                "and return; Ray restarts it if its process dies.",
            ),
        ] = False,
        stop_actor: Annotated[bool, typer.Option("--stop", help="With --ray: stop the loop actor.")] = False,
        metrics_port: Annotated[
            int | None, typer.Option(help="Serve the loop's Prometheus metrics on this port.")
        ] = None,
        metrics_addr: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
    ) -> None:
        """Run the monitoring loop next to a running service (Ctrl-C stops it between steps)."""
        import yaml

        from tuneloop.loop_factory import ControllerFactory

        raw = yaml.safe_load(loop_config.read_text()) if loop_config else {}
        raw.setdefault("adapter", adapter)
        raw.setdefault("service_url", service_url)
        factory = ControllerFactory(config, raw)
        if ray_actor:
            _loop_actor(factory, adapter, stop_actor, metrics_port, metrics_addr)
            return
        controller = factory()
        if metrics_port is not None:
            controller.metrics.serve(metrics_port, metrics_addr)
            console.print(f"loop metrics on http://{metrics_addr}:{metrics_port}/metrics")
        if once:
            controller.store.acquire()
            try:
                r = controller.tick()
            finally:
                controller.store.release()
            console.print(f"{r.state}: {r.message}")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        controller.run(stop, on_tick=lambda r: console.print(f"[dim]{r.state}[/dim] {r.message}"))

    @app.command()
    def status(
        adapter: Annotated[str, typer.Option()] = "support",
        config: Annotated[Path | None, typer.Option()] = None,
    ) -> None:
        """The loop's current state, the champion and recent runs."""
        from monitoring.loop import LoopController, LoopSettings
        from tuneloop.commands.adapters import open_cli_registry

        registry, settings = open_cli_registry(config)
        controller = LoopController(
            LoopSettings(adapter=adapter, database_url=settings.serving.resolved_database_url()), registry
        )
        print(json.dumps(controller.status(), indent=2, default=str))

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


def _loop_actor(
    factory: object, adapter: str, stop: bool, metrics_port: int | None, metrics_addr: str
) -> None:
    import ray

    from monitoring.actor import DEFAULT_ACTOR_NAME, start_loop_actor

    name = f"{DEFAULT_ACTOR_NAME}-{adapter}"
    factory.settings()  # type: ignore[attr-defined]  # fail here, with a clear error, on bad settings
    ray.init(address="auto", namespace="tuneloop", log_to_driver=False, configure_logging=False)
    if stop:
        try:
            actor = ray.get_actor(name)
        except ValueError:
            console.print(f"no loop actor {name!r} is running")
            return
        stopped = bool(ray.get(actor.stop.remote(), timeout=120))
        ray.kill(actor, no_restart=True)
        console.print(f"stopped {name} ({'cleanly' if stopped else 'killed mid-step'})")
        return
    actor = start_loop_actor(
        factory,  # type: ignore[arg-type]
        name=name,
        detached=True,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
    )
    print(json.dumps(ray.get(actor.status.remote(), timeout=120), indent=2, default=str))
