"""What the control plane refuses, each with the HTTP status its answer carries."""


class RequestRefused(Exception):
    status = 400


class Invalid(RequestRefused):
    """A body, path or header the API does not accept; the message names the field."""

    status = 400


class NotFound(RequestRefused):
    status = 404


class Conflict(RequestRefused):
    """The request contradicts the current state: registered already, paused, a run id used before."""

    status = 409


class StaleVersion(RequestRefused):
    """If-Match named another version than the current one."""

    status = 412
