"""A tiny asyncio HTTP/1.1 server for ``/metrics``, ``/healthz`` and ``/readyz``.

It runs on the pipeline's event loop (no thread): a scrape reads the counters between two
batches, never in the middle of one. It answers GET (and HEAD) on three paths, one request per
connection, and nothing else; it is an operations port, not an API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from streams.ops.health import CONTENT_TYPE, Probe

__all__ = ["MetricsServer", "DEFAULT_METRICS_PORT", "port_free"]

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9464
"""The port ``scoreline run`` serves metrics on unless told otherwise (Prometheus' exporter convention)."""

def port_free(port: int, host: str = "0.0.0.0") -> bool:
    """Whether ``port`` can be listened on right now (racy by nature: a hint, not a reservation)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}


class MetricsServer:
    """Serves one :class:`~streams.ops.health.Probe` (a pipeline's ``PipelineMetrics``) over HTTP.

    ``/metrics``: the Prometheus text format. ``/healthz``: 200 while every role's loop runs,
    503 once one died. ``/readyz``: 200 once every role has partitions and its models load,
    else 503 with the reason in the body.
    """

    def __init__(self, probe: Probe, *, port: int, host: str = "0.0.0.0") -> None:
        self.probe = probe
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and listen (``port`` 0 picks a free port, then ``port`` holds it)."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror} "
                                     "(pick another --metrics-port, or 0 to disable)") from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here needs them
            status, content_type, body = self._respond(line)
            head = line.split(b" ", 1)[0] == b"HEAD"
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + (b"" if head else body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - a bad scrape must never take the pipeline down
            log.exception("metrics: request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _respond(self, line: bytes) -> tuple[int, str, bytes]:
        parts = line.decode("latin-1").split()
        if len(parts) < 2:
            return 400, "text/plain", b"bad request\n"
        method, path = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, self.probe.exposition()
        if path in ("/healthz", "/readyz"):
            ok, why = self.probe.health() if path == "/healthz" else self.probe.readiness()
            return (200 if ok else 503), "text/plain", f"{why}\n".encode()
        return 404, "text/plain", b"try /metrics, /healthz or /readyz\n"
