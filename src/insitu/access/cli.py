"""Account commands: ``insitu user add`` (host) and ``insitu whoami`` (client)."""

from __future__ import annotations

from typing import Annotated

import typer

from insitu.access import service
from insitu.cli.common import api_get, emit_json, fail, local_platform
from insitu.db import session_scope
from insitu.ledger.service import HOST_ACTOR

user_app = typer.Typer(help="Manage accounts (runs on the platform host).", no_args_is_help=True)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Account name: a-z, 0-9, '.', '_', '-'.")],
    role: Annotated[
        str,
        typer.Option(help="admin, steward, researcher, maintainer, organiser or auditor."),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add an account and print its first API token (shown once, stored only as a hash)."""
    with local_platform() as platform:
        try:
            with session_scope(platform.sessions) as session:
                user = service.create_user(session, name, role)
                token = service.issue_token(session, user, label="initial")
        except service.AccessError as exc:
            fail(str(exc))
    if json_output:
        emit_json({"name": name, "role": role, "token": token})
    else:
        typer.echo(f"created {role} {name}; API token (shown once):\n{token}")


def _change_user(name: str, change: str, argument: str = "") -> str:
    with local_platform() as platform:
        try:
            with session_scope(platform.sessions) as session:
                if change == "revoke":
                    count = service.revoke_token(session, argument, HOST_ACTOR)
                    return f"revoked {count} token(s) starting with {argument}"
                user = service.get_user(session, name)
                if user is None:
                    fail(f"no user {name!r}: see the accounts with your admin")
                if change == "role":
                    service.set_role(session, user, argument, HOST_ACTOR)
                    return f"{name} is now {argument}"
                service.deactivate_user(session, user, HOST_ACTOR)
                return f"{name} is deactivated; their tokens no longer work"
        except service.AccessError as exc:
            fail(str(exc))


@user_app.command("set-role")
def user_set_role(
    name: Annotated[str, typer.Argument(help="Account name.")],
    role: Annotated[str, typer.Argument(help="The new role.")],
) -> None:
    """Change an account's role (written to the ledger)."""
    typer.echo(_change_user(name, "role", role))


@user_app.command("deactivate")
def user_deactivate(name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    """Switch an account off (written to the ledger); its tokens stop working."""
    typer.echo(_change_user(name, "deactivate"))


@user_app.command("revoke-token")
def user_revoke_token(
    prefix: Annotated[str, typer.Argument(help="The token's first 11 characters or more.")],
) -> None:
    """Revoke an API token by its prefix (written to the ledger)."""
    typer.echo(_change_user("", "revoke", prefix))


def whoami(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show who the saved or $INSITU_TOKEN token belongs to."""
    me = api_get("/whoami")
    if json_output:
        emit_json(me)
    else:
        typer.echo(f"{me['name']} ({me['role']})")
