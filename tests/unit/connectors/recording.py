"""A transport for an HTTP session that sends nothing: it keeps each prepared request and
answers 200 with the given JSON bodies in turn (the last one again once they run out), so a
test sees exactly what a client would put on the wire."""
from __future__ import annotations

import json

import requests


class Recording(requests.adapters.BaseAdapter):
    def __init__(self, *answers: dict) -> None:
        super().__init__()
        self.answers = answers
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **_) -> requests.Response:
        self.sent.append(request)
        answer = self.answers[min(len(self.sent), len(self.answers)) - 1]
        response = requests.Response()
        response.status_code, response._content, response.request, response.url = 200, json.dumps(answer).encode(), request, request.url
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self) -> None:
        pass
