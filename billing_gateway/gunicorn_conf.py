"""gunicorn settings for production: `gunicorn -c python:billing_gateway.gunicorn_conf
'billing_gateway:create_app()'`. Each value can be overridden by the environment.

gthread workers: the work is waiting on PostgreSQL, so a few threads per process keep the
CPU busy while the GIL is released during queries. One process per core; with the
database on the same machine (the development box) fewer processes leave it a core.
https://docs.gunicorn.org/en/stable/design.html#how-many-workers
"""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("BILLING_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("BILLING_THREADS", "4"))
# Keep-alive lets a client (the SMS sender, a load balancer) reuse connections.
keepalive = 5
graceful_timeout = 10
timeout = 30
# No access log by default: at thousands of requests per second it costs a core.
accesslog = os.environ.get("BILLING_ACCESS_LOG") or None
