"""`tuneloop loop` (run the closed loop from a spec), `tuneloop loop validate`, `tuneloop status`."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from monitoring.loop import LoopController
    from tuneloop.loop_factory import ControllerFactory

console = Console()
err = Console(stderr=True)

SpecOption = Annotated[
    Path | None, typer.Option("--spec", help="The loop spec YAML (docs/loop.md).", dir_okay=False)
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="tuneloop settings YAML.")]


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs (values parsed as YAML scalars: numbers, booleans, null, strings)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {pair!r}: use KEY=VALUE (dotted keys, e.g. canary.mde=0.1)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def spec_overrides(pairs: list[str] | None, service_url: str | None) -> dict[str, Any]:
    """The spec keys the command line sets: `--set` pairs, then `--service-url` (which wins)."""
    overrides = _overrides(pairs)
    if service_url is not None:
        overrides["service_url"] = service_url
    return overrides


def _fail(exc: Exception) -> NoReturn:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2) from exc


def describe_spec(spec: Any) -> list[str]:
    """A short, human-readable account of what a validated spec will do."""
    from monitoring.drift.checks import detector_for_threshold

    lines = [f"adapter: {spec.adapter} (service {spec.service_url})"]
    lines.append(f"slices: by tag {spec.slice_key!r}" if spec.slice_key else "slices: none (all traffic)")
    policy = spec.policy
    for kind, rule in (("input drift", policy.input_drift), ("quality drift", policy.quality_drift)):
        if rule is None:
            lines.append(f"{kind}: off")
            continue
        detectors = []
        for name in rule.detectors:
            detector = detector_for_threshold(name, rule.max_p_value)
            extra = f", {detector.permutations} permutations" if hasattr(detector, "permutations") else ""
            detectors.append(f"{name} (p <= {rule.max_p_value}{extra})")
        lines.append(f"{kind}: {', '.join(detectors)}; at least {rule.min_samples} samples")
    lines.append(
        f"policy {policy.name!r}: {'all rules' if policy.require_all else 'any rule'}, cooldown "
        f"{policy.cooldown_minutes:g} min, <= {policy.max_trainings_per_day} trainings/day"
        + (", approval required" if policy.require_approval else "")
        + (", dry run" if policy.dry_run else "")
    )
    lines.append(f"suites: target {spec.suites.target or '-'}, regression {spec.suites.regression or '-'}")
    recipe = spec.recipe
    lines.append(
        f"recipe: {recipe.training if isinstance(recipe.training, Path) else 'inline training config'}; "
        f">= {recipe.min_corrections} corrections" + (f"; replay {recipe.replay}" if recipe.replay else "")
    )
    c = spec.canary
    lines.append(
        f"canary: {' → '.join(f'{w:.0%}' for w in c.steps)} of traffic then promote; "
        f"{c.min_requests_per_step} to {c.max_requests_per_step or 'any number of'} scored requests per step "
        f"on {c.scorer!r}, mde {c.mde:g}, alpha {c.alpha:g}"
    )
    lines.append(f"state: {spec.resolved_state_dir()}")
    return lines


loop_app = typer.Typer(
    help="The closed loop: watch an adapter's traffic, retrain on drift, gate, canary, promote.",
    invoke_without_command=True,
    no_args_is_help=False,
)
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a spec key: KEY=VALUE (dotted).")
]


def register(app: typer.Typer) -> None:
    """Mount `loop` (with `loop validate`) and `status` on the root CLI."""
    app.add_typer(loop_app, name="loop")
    app.command()(status)


@loop_app.callback()
def loop(
    ctx: typer.Context,
    spec: SpecOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    service_url: Annotated[str | None, typer.Option(help="Override the spec's service_url.")] = None,
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
    """Run the monitoring loop of a spec next to a running service (Ctrl-C stops it between steps)."""
    if ctx.invoked_subcommand is not None:
        return
    if spec is None:
        err.print("[red]error:[/red] give the loop spec: tuneloop loop --spec loop.yaml (docs/loop.md)")
        raise typer.Exit(2)
    factory, adapter = _loop_factory(spec, config, spec_overrides(set_, service_url))
    if ray_actor:
        _loop_actor(factory, adapter, stop_actor, metrics_port, metrics_addr)
        return
    controller = factory()
    if metrics_port is not None:
        controller.metrics.serve(metrics_port, metrics_addr)
        console.print(f"loop metrics on http://{metrics_addr}:{metrics_port}/metrics")
    if once:
        _tick_once(controller)
    else:
        _run_until_stopped(controller)


@loop_app.command("validate")
def validate(
    spec: Annotated[Path, typer.Argument(help="The loop spec YAML.", dir_okay=False)],
    set_: SetOption = None,
) -> None:
    """Check a loop spec without starting anything: every problem at once, or what the loop will do."""
    from monitoring.spec import SpecError, load_spec

    try:
        loaded = load_spec(spec, overrides=_overrides(set_))
    except SpecError as exc:
        err.print(f"[red]✗[/red] {spec}: {len(exc.problems) or 1} problem(s)", soft_wrap=True)
        for line in exc.problems or [str(exc)]:
            err.print(f"  • {line}", soft_wrap=True, markup=False)
        raise typer.Exit(2) from exc
    console.print(f"[green]✓[/green] {spec} is a valid loop spec", soft_wrap=True)
    for line in describe_spec(loaded):
        console.print(f"  {line}", soft_wrap=True, markup=False)


def status(
    spec: SpecOption = None,
    adapter: Annotated[str | None, typer.Option(help="Adapter name (instead of --spec).")] = None,
    config: ConfigOption = None,
) -> None:
    """The loop's current state, the champion and recent runs."""
    from monitoring.loop import LoopController
    from monitoring.spec import SpecError
    from tuneloop.loop_factory import ControllerFactory
    from tuneloop.settings import SettingsError

    if (spec is None) == (adapter is None):
        err.print("[red]error:[/red] give --spec FILE or --adapter NAME")
        raise typer.Exit(2)
    source: Path | dict[str, Any] = spec if spec is not None else _status_spec(str(adapter))
    try:
        registry, _, loaded = ControllerFactory(source, config).load()
    except (SpecError, SettingsError) as exc:
        _fail(exc)
    print(json.dumps(LoopController(loaded, registry).status(), indent=2, default=str))


def _loop_factory(
    spec: Path, config: Path | None, overrides: dict[str, Any]
) -> tuple[ControllerFactory, str]:
    """The controller factory of a spec (loaded and validated once here) and the spec's adapter."""
    from monitoring.spec import SpecError
    from tuneloop.loop_factory import ControllerFactory
    from tuneloop.settings import SettingsError

    factory = ControllerFactory(spec, config, overrides)
    try:
        _, _, loaded = factory.load()
    except (SpecError, SettingsError) as exc:
        _fail(exc)
    return factory, loaded.adapter


def _tick_once(controller: LoopController) -> None:
    """One tick of the loop, holding its state lock, and what it did."""
    controller.store.acquire()
    try:
        r = controller.tick()
    finally:
        controller.store.release()
    console.print(f"{r.state}: {r.message}")


def _run_until_stopped(controller: LoopController) -> None:
    """Tick until SIGTERM or Ctrl-C (the controller stops between steps), printing each tick."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller.run(stop, on_tick=lambda r: console.print(f"[dim]{r.state}[/dim] {r.message}"))


def _status_spec(adapter: str) -> dict[str, Any]:
    """The smallest spec that opens an adapter's loop state (status reads; it never gates)."""
    from evals.suite import builtin_suite_names

    return {"adapter": adapter, "suites": {"target": builtin_suite_names()[0]}}


def _loop_actor(factory: Any, adapter: str, stop: bool, metrics_port: int | None, metrics_addr: str) -> None:
    import ray

    from monitoring.actor import DEFAULT_ACTOR_NAME, start_loop_actor
    from training.dispatch import use_local_token_auth

    name = f"{DEFAULT_ACTOR_NAME}-{adapter}"
    use_local_token_auth()
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
        factory,
        name=name,
        detached=True,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
    )
    print(json.dumps(ray.get(actor.status.remote(), timeout=120), indent=2, default=str))
