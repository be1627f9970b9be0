"""Account commands: ``insitu user add`` (host) and ``insitu whoami`` (client)."""

from __future__ import annotations

from typing import Annotated

import typer

from insitu.access import service
from insitu.cli.common import api_get, emit_json, fail, local_platform
from insitu.db import session_scope

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


def whoami(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show who the saved or $INSITU_TOKEN token belongs to."""
    me = api_get("/whoami")
    if json_output:
        emit_json(me)
    else:
        typer.echo(f"{me['name']} ({me['role']})")
