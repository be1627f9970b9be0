"""What the viewer keeps: frames rendered per user and hour (the frame budget), and which
series a user opened in which hour (each first opening is a ledger "use" event)."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base


class FrameUse(Base):
    """Frames (renders and thumbnails) a user got in one UTC hour."""

    __tablename__ = "viewer_frame_use"
    __table_args__ = (UniqueConstraint("user_id", "hour"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    hour: Mapped[str] = mapped_column(String(13))
    """``YYYY-MM-DDTHH`` in UTC."""
    frames: Mapped[int] = mapped_column(Integer, default=0)


class SeriesOpening(Base):
    """A user opened a series in an hour; written with its ledger event."""

    __tablename__ = "viewer_series_openings"
    __table_args__ = (UniqueConstraint("user_id", "series_id", "hour"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    series_id: Mapped[int] = mapped_column(Integer, index=True)
    """No foreign key: a subject's withdrawal deletes catalogue rows, never this history."""
    hour: Mapped[str] = mapped_column(String(13))
