"""One error hierarchy for every Kubernetes API call: the HTTP status picks the class."""

from __future__ import annotations


class ApiError(Exception):
    """The API server answered a status other than 2xx (or a watch stream carried an ERROR event)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NotFound(ApiError):
    """HTTP 404."""


class Conflict(ApiError):
    """HTTP 409: the object changed since it was read (or already exists); read again and retry."""


class Gone(ApiError):
    """HTTP 410: the resourceVersion (or a list's continue token) expired; only a re-list can continue."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 410: Gone}


def error_for(status: int, message: str) -> ApiError:
    return _BY_STATUS.get(status, ApiError)(status, message)


class ConfigError(Exception):
    """No way to reach the API server: not in a pod, or a kubeconfig that cannot be used."""
