"""The rule that every audited change commits together with its ledger entry.

Domains mark their audited models with a ``__ledger_audit__`` class attribute: the set of
audited columns, or ``AUDIT_ALL``. Inserts and deletes of such a model are always audited.
Marking the model itself (not registering at run time) means no import order can leave a
table unguarded. A SQLAlchemy session hook notes, per transaction, whether an audited row
was inserted, updated or deleted and whether a ledger entry was appended; ``before_commit``
refuses a transaction with the first and not the second. It covers ORM unit-of-work changes
and ORM-enabled ``insert``/``update``/``delete`` statements run through a Session; raw
connections bypass it (the platform uses none for audited tables).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from insitu.ledger.models import LedgerEntry

AUDIT_ALL: frozenset[str] = frozenset({"*"})
ATTRIBUTE = "__ledger_audit__"
CHANGED = "insitu.audited_change"
RECORDED = "insitu.ledger_recorded"


class UnrecordedChangeError(RuntimeError):
    """An audited change was about to commit without a ledger entry."""


def audited_columns(model: type[Any]) -> frozenset[str] | None:
    """The audited columns of a model (``AUDIT_ALL`` for all), None if it is not audited."""
    columns = getattr(model, ATTRIBUTE, None)
    return frozenset(columns) if columns is not None else None


def _audited_update(instance: Any, columns: frozenset[str]) -> bool:
    state = inspect(instance)
    names = [a.key for a in state.mapper.column_attrs] if columns == AUDIT_ALL else columns
    return any(state.attrs[name].history.has_changes() for name in names)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    for instance in session.new:
        if isinstance(instance, LedgerEntry):
            session.info[RECORDED] = True
        elif audited_columns(type(instance)) is not None:
            session.info[CHANGED] = f"rows added to {instance.__tablename__}"
    for instance in session.deleted:
        if audited_columns(type(instance)) is not None:
            session.info[CHANGED] = f"rows removed from {instance.__tablename__}"
    for instance in session.dirty:
        columns = audited_columns(type(instance))
        if columns is not None and _audited_update(instance, columns):
            session.info[CHANGED] = f"update of {instance.__tablename__}"


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    for mapper in state.all_mappers:
        if mapper.class_ is LedgerEntry and state.is_insert:
            state.session.info[RECORDED] = True
        elif audited_columns(mapper.class_) is not None:
            state.session.info[CHANGED] = f"statement on {mapper.class_.__tablename__}"


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
