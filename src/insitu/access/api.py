"""Access routes: who am I."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from insitu.access.permissions import AnyUser

router = APIRouter(tags=["access"])


class WhoAmI(BaseModel):
    """The caller."""

    name: str
    role: str


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: AnyUser) -> WhoAmI:
    """Who the token belongs to."""
    return WhoAmI(name=principal.name, role=principal.role.value)
