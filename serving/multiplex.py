"""Adapter-aware routing across replicas, on Ray Serve's model multiplexing.

Ray Serve's HTTP proxy cannot read request bodies, but it routes on one header: a request carrying
`serve_multiplexed_model_id: <id>` (or `serve-multiplexed-model-id`) goes to a replica that reports `<id>`
among its multiplexed model ids; when none does (or those are saturated), to one of the replicas that
report the fewest ids, and only then to any replica. tuneloop uses that as is:

- **the id is an adapter version's canonical name**, `name@<12 hex>` (`VersionRef.short`: the engine's
  LoRA name, the `x-tuneloop-served-by` response header, a version's id in `GET /v1/models`). Residency is
  per version, so the router matches on versions; an alias or an experiment names whatever it points at
  *now*, and the versions aliases and experiments point at are pinned on every replica anyway, so such
  names would not narrow the choice (they are accepted in the header, and simply match no report);
- **each replica reports exactly what it holds**: the versions resident or loading in its
  `ServingCore` (on-demand LRU and pinned alike), re-read every `interval_s` and pushed when it changed
  (`ResidencyReporter`). A version the core evicts (its LRU, a release, the engine's own LRU) leaves the
  report, so requests for it stop preferring this replica;
- a request whose header contradicts its body's `model` is refused with a 400 (`check_routing_header`);
  requests without the header are routed and served exactly as before.

Why not `@serve.multiplexed`: its wrapper keeps a second LRU of "models" beside the core's, and has no
public way to drop one id the core evicted on its own (pinned versions, releases, vLLM's LRU), so its
report would drift from the truth. The replica therefore pushes the core's residency through the same
channel the wrapper uses (`ServeControllerClient.record_request_routing_info`), which is private to Ray
(`serve_publisher`); `ray[serve]` is pinned and a unit test checks the names this relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from serving.errors import BadRequestError
from serving.router import Miss, RoutingSnapshot

log = logging.getLogger("tuneloop.serving")

MULTIPLEXED_MODEL_ID_HEADER = "serve_multiplexed_model_id"
"""The request header Ray Serve's proxy routes on (the proxy also accepts it with hyphens)."""
_HEADER_SPELLINGS = (MULTIPLEXED_MODEL_ID_HEADER, MULTIPLEXED_MODEL_ID_HEADER.replace("_", "-"))

Publish = Callable[[list[str]], None]
"""Tell the router which multiplexed model ids this replica holds."""


def routing_header(headers: Mapping[str, str]) -> str | None:
    """The request's multiplexed model id (either spelling), stripped; None when absent or empty."""
    for name in _HEADER_SPELLINGS:
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    return None


def check_routing_header(snapshot: RoutingSnapshot, header: str | None, model: str) -> None:
    """Refuse (400) a request whose multiplexed model id names something other than its body's `model`.

    Accepted: no header; the header equal to `model`; a header that names the same version as `model`
    (any form: `name@<prefix>`, an alias) or, for both, the base. Refused: a header that names nothing,
    another version, or anything but the experiment itself when `model` is an experiment (its arm is
    chosen per request). A `model` that names nothing is left to the request path's own 404."""
    if header is None or header == model:
        return
    experiment = snapshot.experiment_for(model)
    body_target = snapshot.lookup(model) if experiment is None else None
    if isinstance(body_target, Miss):
        return
    header_target = snapshot.lookup(header)
    if isinstance(header_target, Miss):
        raise _mismatch(header, model, "names no model this server serves")
    if body_target is None:
        raise _mismatch(header, model, f"is not the experiment '{model}' the body names")
    if header_target.version != body_target.version:
        raise _mismatch(header, model, f"names {header_target.served_by}, not {body_target.served_by}")


def _mismatch(header: str, model: str, why: str) -> BadRequestError:
    return BadRequestError(
        f"The {MULTIPLEXED_MODEL_ID_HEADER} header '{header}' {why} (the body's model is '{model}'). "
        f"Send the version the body names as name@<12 hex> (its x-tuneloop-served-by), or no header.",
        param=MULTIPLEXED_MODEL_ID_HEADER,
        code="routing_header_mismatch",
    )


class ResidencyReporter:
    """Pushes a replica's resident adapter versions (`ids()`) to the router whenever they change, and
    again every `refresh_s` (a router or controller that restarted learns them back)."""

    def __init__(
        self,
        ids: Callable[[], list[str]],
        publish: Publish,
        *,
        interval_s: float = 0.1,
        refresh_s: float = 30.0,
    ) -> None:
        self._ids = ids
        self._publish = publish
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.reported: list[str] | None = None
        self.pushes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run on the current event loop until `stop`."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tuneloop-residency-report")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def report(self) -> bool:
        """Push the ids if they changed since the last push; True if pushed."""
        ids = self._ids()
        if ids == self.reported:
            return False
        self._push(ids)
        return True

    def _push(self, ids: list[str]) -> None:
        self._publish(ids)
        self.reported = ids
        self.pushes += 1

    async def _run(self) -> None:
        last_push = time.monotonic()
        while True:
            try:
                if self.report():
                    last_push = time.monotonic()
                elif time.monotonic() - last_push >= self.refresh_s:
                    self._push(self._ids())
                    last_push = time.monotonic()
            except Exception:  # noqa: BLE001 - a failed push is retried on the next change or refresh
                log.warning("reporting resident adapters to the Serve router failed", exc_info=True)
                self.reported = None
            await asyncio.sleep(self.interval_s)


def serve_publisher(replica_id: Any) -> Publish | None:
    """Ray Serve's channel for a replica's multiplexed model ids (what `@serve.multiplexed` pushes
    through), for replica `replica_id` (`serve.get_replica_context().replica_id`); None when this Ray
    does not have it (adapter-aware routing is then off; every request is still served).

    Private to Ray: `ray.serve.context._get_global_client` and `ray.serve._private.common.
    RequestRoutingInfo` (checked against the installed Ray by tests/unit/serving/test_serving_core.py)."""
    try:
        from ray.serve._private.common import RequestRoutingInfo
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        assert client is not None  # it raises when no controller runs
        record = client.record_request_routing_info
    except Exception:  # noqa: BLE001 - another Ray: serve without routing preference
        log.warning("no multiplexed-id report in this Ray Serve: adapter-aware routing off", exc_info=True)
        return None

    def publish(ids: list[str]) -> None:
        record(RequestRoutingInfo(replica_id=replica_id, multiplexed_model_ids=list(ids)))

    return publish
