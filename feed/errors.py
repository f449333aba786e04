"""One exception tree for the whole project; HTTP errors exist only in `serving/`."""

from __future__ import annotations


class FeedError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(FeedError):
    """A configuration file, environment variable or flag has an invalid value."""


class DataError(FeedError):
    """Input data breaks the contract; names the file, row and column when known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = path
        self.row = row
        self.column = column
        super().__init__(_locate(message, path, row, column))


class ArtifactError(FeedError):
    """A bundle or model artifact is missing, corrupted or inconsistent; names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UnknownUserError(FeedError):
    """A user id the model has never seen (callers usually fall back to cold start)."""


class UnknownItemError(FeedError):
    """A video, creator or product id unknown to the model or catalog."""


def _locate(message: str, path: str | None, row: int | None, column: str | None) -> str:
    """Prefix a message with 'file, row N, column C: ' for whatever is known."""
    parts = [p for p in (path, None if row is None else f"row {row}",
                         None if column is None else f"column '{column}'") if p]
    return f"{', '.join(parts)}: {message}" if parts else message
