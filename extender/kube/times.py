"""Timestamps as the API server writes and reads them."""

from __future__ import annotations

import datetime


def micro_time(moment: datetime.datetime) -> str:
    """A MicroTime (Events' ``eventTime``, a Lease's ``renewTime``): exactly six fraction digits, or the API
    server rejects it."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    """An RFC 3339 Time or MicroTime; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
