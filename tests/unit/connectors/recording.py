"""A transport for an HTTP session that sends nothing: it keeps each prepared request and
answers 200 with a fixed JSON body, so a test sees exactly what a client would put on the wire."""
from __future__ import annotations

import json

import requests


class Recording(requests.adapters.BaseAdapter):
    def __init__(self, answer: dict) -> None:
        super().__init__()
        self.answer = answer
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **_) -> requests.Response:
        self.sent.append(request)
        response = requests.Response()
        response.status_code, response._content, response.request, response.url = 200, json.dumps(self.answer).encode(), request, request.url
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self) -> None:
        pass
