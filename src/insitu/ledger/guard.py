"""The rule that every audited change commits together with its ledger entry.

Domains register their audited models (optionally only some columns). A SQLAlchemy session
hook notes, per transaction, whether an audited row was inserted, updated or deleted and
whether a ledger entry was appended; ``before_commit`` refuses a transaction with the first
and not the second. It covers ORM unit-of-work changes and ORM-enabled ``insert``/``update``/
``delete`` statements run through a Session; raw connections bypass it (none are used).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from insitu.ledger.models import LedgerEntry

_AUDITED: dict[type[Any], frozenset[str] | None] = {}
_AUDITED_TABLES: set[str] = set()
CHANGED = "insitu.audited_change"
RECORDED = "insitu.ledger_recorded"


class UnrecordedChangeError(RuntimeError):
    """An audited change was about to commit without a ledger entry."""


def audit(model: type[Any], columns: set[str] | None = None) -> None:
    """Require a ledger entry for inserts and deletes of ``model``, and updates of ``columns``
    (every column when None)."""
    _AUDITED[model] = frozenset(columns) if columns is not None else None
    _AUDITED_TABLES.add(model.__tablename__)


def _audited_update(instance: Any, columns: frozenset[str] | None) -> bool:
    state = inspect(instance)
    names = columns if columns is not None else [a.key for a in state.mapper.column_attrs]
    return any(state.attrs[name].history.has_changes() for name in names)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    for instance in session.new:
        if isinstance(instance, LedgerEntry):
            session.info[RECORDED] = True
        elif type(instance) in _AUDITED:
            session.info[CHANGED] = f"rows added to {instance.__tablename__}"
    for instance in session.deleted:
        if type(instance) in _AUDITED:
            session.info[CHANGED] = f"rows removed from {instance.__tablename__}"
    for instance in session.dirty:
        kind = type(instance)
        if kind in _AUDITED and _audited_update(instance, _AUDITED[kind]):
            session.info[CHANGED] = f"update of {instance.__tablename__}"


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name == LedgerEntry.__tablename__ and state.is_insert:
        state.session.info[RECORDED] = True
    elif name in _AUDITED_TABLES:
        state.session.info[CHANGED] = f"statement on {name}"


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    session.flush()
    change = session.info.get(CHANGED)
    if change and not session.info.get(RECORDED):
        raise UnrecordedChangeError(
            f"refusing to commit an audited change ({change}) without its ledger entry: "
            "call insitu.ledger.service.record() in the same transaction"
        )


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(CHANGED, None)
        session.info.pop(RECORDED, None)
