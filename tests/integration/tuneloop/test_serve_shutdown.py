"""`tuneloop.commands.serve.shutdown_serve` on real Ray Serve: everything stops, the controller exits,
and the driver prints none of the task-failure noise `serve.shutdown()` leaves behind."""

from __future__ import annotations

import time

import httpx
import pytest

from serving.testing import free_port
from tuneloop.commands.serve import shutdown_serve

pytestmark = pytest.mark.integration

NOISE = "ServeController.graceful_shutdown failed"


def start_tiny_app() -> str:
    from ray import serve

    @serve.deployment
    class Echo:
        async def __call__(self, request: object) -> str:
            return "ok"

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Echo.bind(), name="echo", route_prefix="/")
    url = f"http://127.0.0.1:{port}/"
    assert httpx.get(url, timeout=30).text == "ok"
    return url


def controller_alive() -> bool:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def test_shutdown_stops_serve_quietly(ray_cluster: None, capfd: pytest.CaptureFixture[str]) -> None:
    url = start_tiny_app()
    shutdown_serve(timeout_s=60)
    time.sleep(3)  # Ray's error listener would print the task failure within this
    out, err = capfd.readouterr()
    assert NOISE not in out + err
    assert "stopping it the plain way" not in out + err  # the graceful path worked, no fallback
    assert not controller_alive()
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=5)
    shutdown_serve(timeout_s=5)  # nothing running: returns at once
