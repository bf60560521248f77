"""Errors the segments services raise for the API and screens to turn into 4xx answers."""


class SegmentError(Exception):
    """A request the services refuse: `code` for machines, `message` for people, `field` if any."""

    def __init__(self, code: str, message: str, *, field: str | None = None, status: int = 400,
                 errors: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.errors = errors or []

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.errors:
            body["errors"] = self.errors
        return body
