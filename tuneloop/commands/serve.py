"""`tuneloop serve`: start local Ray + the Serve app, block until SIGTERM/Ctrl-C, then drain and stop."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from common.home import clear_service_ray_address, tuneloop_home, write_service_ray_address

console = Console(stderr=True)

RAY_ENV_DEFAULTS: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
}
"""Environment defaults for the local Ray cluster `tuneloop serve` (and the demo) start; a value already in
the environment wins. Ray Serve's controller runs its control loop every 0.1 s by default; at 0.5 s an
idle service's controller and GCS use 0.016 instead of 0.044 of a core (2 cores,
`benchmarks/results/serving_idle_cost.md`), CPU that a vLLM engine on the same cores gets back. The cost:
deployment changes (replicas starting or failing, routing updates) are noticed up to 0.5 s later. The
Dockerfiles and the KubeRay manifest set the same."""


def apply_ray_env_defaults() -> dict[str, str]:
    """Set `RAY_ENV_DEFAULTS` missing from `os.environ` (before Ray starts: its processes inherit them);
    returns what was set."""
    missing = {k: v for k, v in RAY_ENV_DEFAULTS.items() if k not in os.environ}
    os.environ.update(missing)
    return missing


def start_local_serve(
    config: dict[str, object], host: str, port: int, *, num_cpus: int | None = None
) -> None:
    """Start Ray (if needed) and the tuneloop Serve application on host:port; returns when it is ready."""
    import ray
    from ray import serve

    from serving.app import build_app

    apply_ray_env_defaults()
    if not ray.is_initialized():
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    serve.start(http_options={"host": host, "port": port}, logging_config={"enable_access_log": False})
    serve.run(build_app(config), name="tuneloop", route_prefix="/", blocking=False)
    # the loop and `tuneloop train` read this to train in this cluster (pre-warmed workers, one Ray)
    write_service_ray_address(_home_of(config), ray.get_runtime_context().gcs_address)


def _home_of(config: dict[str, object]) -> Path:
    home = config.get("home")
    return Path(str(home)).expanduser() if home else tuneloop_home()


def wait_ready(base_url: str, timeout_s: float = 600.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base_url}/ready", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"service at {base_url} not ready after {timeout_s:.0f} s: {last}")


def wait_for_in_flight(timeout_s: float = 60.0, app: str = "tuneloop") -> int:
    """Block until no replica of `app` has an ongoing request (or `timeout_s`); the count left.

    `serve.shutdown()` on its own does not drain streams here: it stops the HTTP proxy while replicas are
    still answering (seen in tests/reliability: every in-flight stream cut). So `stop_local_serve` waits
    for the replicas' own ongoing-request counters to reach zero first."""
    import ray

    deadline = time.monotonic() + timeout_s
    left = 0
    while True:
        replicas = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{app}#")
        ]
        counts = []
        for info in replicas:
            try:
                actor = ray.get_actor(info["name"], namespace=info["namespace"])
                ongoing: Any = ray.get(actor.get_num_ongoing_requests.remote(), timeout=10)
                counts.append(int(ongoing))
            except Exception:  # noqa: BLE001 - a dead replica has nothing left to drain
                counts.append(0)
        left = sum(counts)
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.25)


def shutdown_serve(timeout_s: float = 60.0) -> None:
    """Shut Ray Serve down (deployments drain, proxies stop, the controller exits) and wait for it.

    `serve.shutdown()` does this by waiting on a controller task that only ends when the controller kills
    itself, so Ray prints "(raylet) Task ServeController.graceful_shutdown failed ... killed by
    `ray.kill`" at the end of every clean stop. Here the controller is asked to shut down without a
    waiting task (the same graceful path) and its exit is watched instead; anything unexpected (Serve's
    internals changed, the controller did not exit within `timeout_s`) falls back to `serve.shutdown()`.
    """
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return  # Serve is not running
    try:
        ray.get(controller.graceful_shutdown.remote(False), timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _ = ray.wait([controller.__ray_ready__.remote()], timeout=1.0)
            if ready:
                ray.get(ready[0])  # raises RayActorError once the controller has exited
                time.sleep(0.2)
    except ray.exceptions.RayActorError:
        return  # the controller exited after stopping everything Serve ran
    except Exception as exc:  # noqa: BLE001 - fall back to Serve's own shutdown below
        console.print(f"[yellow]Serve's graceful shutdown: {exc}; stopping it the plain way[/yellow]")
    serve.shutdown()


def stop_local_serve(drain_timeout_s: float = 60.0, home: Path | None = None) -> None:
    import ray

    try:
        if ray.is_initialized():
            left = wait_for_in_flight(drain_timeout_s)
            if left:
                console.print(
                    f"[yellow]{left} request(s) still running after {drain_timeout_s:.0f} s[/yellow]"
                )
            shutdown_serve()  # drains replicas: in-flight requests finish (graceful_shutdown_timeout_s)
    finally:
        if home is not None:
            clear_service_ray_address(home)
        if ray.is_initialized():
            ray.shutdown()


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        port: Annotated[int | None, typer.Option(help="HTTP port (default: settings, 8000).")] = None,
        host: Annotated[str | None, typer.Option(help="Bind address (default: settings, 127.0.0.1).")] = None,
        config: Annotated[Path | None, typer.Option(help="tuneloop settings YAML.")] = None,
        base_model: Annotated[str | None, typer.Option(help="'default' or a local HF model folder.")] = None,
        replicas: Annotated[int | None, typer.Option(help="Model replicas.")] = None,
    ) -> None:
        """Serve the base model and its adapters behind an OpenAI-compatible API (Ctrl-C drains and stops)."""
        from tuneloop.settings import load_settings

        settings = load_settings(
            config,
            {"serving.base_model": base_model, "serving.num_replicas": replicas, "host": host, "port": port},
        )
        host, port = settings.host, settings.port
        stop = threading.Event()
        url = f"http://{host}:{port}"
        with console.status("Starting Ray + Serve + vLLM (about a minute on CPU)…"):
            start_local_serve(settings.serving.model_dump(mode="json"), host, port)
            wait_ready(url)
        # after ray.init: Ray installs its own SIGTERM handler in the driver (it exits at once, cutting
        # in-flight streams); ours replaces it so SIGTERM drains like Ctrl-C
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        console.print(
            f"[green]tuneloop is serving[/green] at {url}/v1 (OpenAI API), {url}/metrics, {url}/admin"
        )
        console.print("Ctrl-C or SIGTERM drains in-flight requests and stops.")
        while not stop.wait(0.5):
            pass
        with console.status("Draining and stopping…"):
            stop_local_serve(home=settings.serving.home)
        console.print("stopped")
