"""What a request did wrong, as an HTTP status and a JSON error naming the field."""

from __future__ import annotations


class HttpError(Exception):
    """A 4xx or 5xx answer: ``{"error": {"status", "message", "field"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"status": self.status, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}
