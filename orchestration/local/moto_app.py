"""moto's WSGI app with DynamoDB requests handled one at a time.

DynamoDB applies each conditional write atomically; moto's threaded server does not: two
concurrent `ADD used` under `used <= :ceiling` both passed 3 times in 15 trials of 8 threads
against a 25-request quota. Quotas and leases rest on those conditions, so local runs and
tests serialize DynamoDB requests (the other services stay concurrent: SQS long polls, Step
Functions executions).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def moto_app() -> Callable[[dict, Callable], Iterable[bytes]]:
    app, dynamodb = DomainDispatcherApplication(create_backend_app), threading.Lock()

    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with dynamodb:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return serve
