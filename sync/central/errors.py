"""The central's API-level refusal, shared by the store's modules, the limits
and the web layers (kept apart so none of them imports another for it)."""

from __future__ import annotations


class CentralError(Exception):
    """An API-level refusal: ``status`` is the HTTP status to answer with; the
    answer is ``{"error": message, **extra}`` (``retry_after`` also becomes the
    ``Retry-After`` header)."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.extra = extra
