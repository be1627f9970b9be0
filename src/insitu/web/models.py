"""What the viewer keeps: which series a user opened in which hour (each first opening is a
ledger "use" event). The frame budget is counted in the serving process
(``access.ratelimit``): writing a row per frame made 20 concurrent viewers queue on the
database's write lock."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base


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
