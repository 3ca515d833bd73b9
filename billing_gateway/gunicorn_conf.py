"""gunicorn settings for production: `gunicorn -c python:billing_gateway.gunicorn_conf
'billing_gateway:create_app()'`. Each value can be overridden by the environment.

gthread workers: the work is waiting on PostgreSQL, so a few threads per process keep the
CPU busy while the GIL is released during queries. One process per core; with the
database on the same machine (the development box) fewer processes leave it a core.
https://docs.gunicorn.org/en/stable/design.html#how-many-workers

A thread is held by a connection from its first byte to the end of the request, so a
slow client pins one: serve behind a buffering proxy (deploy/nginx.conf,
docs/deployment.md), and keep gunicorn on loopback or a unix socket.
https://docs.gunicorn.org/en/stable/deploy.html
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Loopback by default: only the proxy on this machine may reach gunicorn.
bind = os.environ.get("BILLING_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
# gthread, whose own refusals (400, 414, 431) are the contract's JSON, not HTML.
worker_class = "billing_gateway.gunicorn_worker.JsonErrorsWorker"
threads = int(os.environ.get("BILLING_THREADS", "4"))
# Keep-alive lets a client (the SMS sender, a load balancer) reuse connections. Longer
# than the proxy's idle upstream timeout (4 s in deploy/nginx.conf), so the proxy, not
# gunicorn, closes an idle connection and never sends a charge into a closing one.
keepalive = 5
graceful_timeout = 10
timeout = 30
# No access log by default: at thousands of requests per second it costs a core.
accesslog = os.environ.get("BILLING_ACCESS_LOG") or None
# Portal links carry a token in their path: it is redacted from every log line.
logger_class = "billing_gateway.platform.access_log.RedactingLogger"

# Request limits, set explicitly (these are gunicorn's defaults). Our longest URL
# (GET /transactions with every filter) is under 300 bytes and a JWT from an identity
# provider is a few KB, so these refuse only garbage. The refusal is the contract's JSON
# (414 for the line, 431 for the headers). nginx in front refuses first above its own
# limits (large_client_header_buffers 4 8k), also as JSON.
limit_request_line = 4094  # bytes of "METHOD /path?query HTTP/1.1"
limit_request_fields = 100  # header fields per request
limit_request_field_size = 8190  # bytes of one header field, name and value

# Metrics (GET /metrics, docs/operations.md): prometheus_client's multiprocess mode. Each
# worker writes its counters to files in PROMETHEUS_MULTIPROC_DIR and the worker answering a
# scrape sums them all. The variable must be in the environment before a worker first
# imports prometheus_client, so it is set here, in the master, when gunicorn reads this
# module (also before a --preload app is built): every worker inherits it.
# https://prometheus.github.io/client_python/multiprocess/
# Without one from the environment the workers get a private directory, removed at exit
# (an empty value counts as none: it would name the current directory).
_private_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _private_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="billing-gateway-metrics-")
metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server: Any) -> None:
    """Start the metrics from zero: files left by an earlier run would be summed in."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's pool gauges (its counters stay: they only ever add up)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(metrics_dir))


def on_exit(server: Any) -> None:
    """Remove the private metrics directory (one from the environment is left as it is)."""
    if _private_metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
