"""Account commands: ``insitu user ...`` (host); ``login``, ``whoami``, ``token ...`` (client)."""

from __future__ import annotations

from typing import Annotated

import typer

from insitu.access import service
from insitu.cli.common import (
    api_get,
    api_request,
    api_url,
    emit_json,
    fail,
    local_platform,
    save_token,
)
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


@user_app.command("set-password")
def user_set_password(
    name: Annotated[str, typer.Argument(help="Account name.")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="The new password (prompted, hidden, when not given).",
        ),
    ],
) -> None:
    """Set an account's password for browser and `insitu login` (argon2id; unlocks it)."""
    with local_platform() as platform:
        try:
            with session_scope(platform.sessions) as session:
                user = service.get_user(session, name)
                if user is None:
                    fail(f"no user {name!r}")
                service.set_password(session, user, password, HOST_ACTOR)
        except service.AccessError as exc:
            fail(str(exc))
    typer.echo(f"password set for {name}")


def login(
    name: Annotated[str | None, typer.Option(help="Account name (prompted when missing).")] = None,
    paste_token: Annotated[
        bool, typer.Option("--token", help="Paste an API token instead of using a password.")
    ] = False,
    expires_days: Annotated[
        int, typer.Option(min=1, max=365, help="Lifetime of the token a password login gets.")
    ] = 30,
) -> None:
    """Log this machine's CLI in to $INSITU_URL and save the token (file mode 0600)."""
    url = api_url()
    if paste_token:
        token = typer.prompt("API token", hide_input=True).strip()
        me = api_request("GET", "/whoami", token=token)
    else:
        name = name or typer.prompt("account name")
        password = typer.prompt("password", hide_input=True)
        issued = api_request(
            "POST",
            "/auth/token",
            json_body={
                "name": name,
                "password": password,
                "label": "cli",
                "expires_days": expires_days,
            },
            anonymous=True,  # never send a saved token along with a password
        )
        token = issued["token"]
        me = {"name": issued["name"], "role": issued["role"]}
    save_token(url, token)
    typer.echo(f"logged in to {url} as {me['name']} ({me['role']})")


token_app = typer.Typer(help="Your API tokens (client).", no_args_is_help=True)


@token_app.command("list")
def token_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List your tokens: prefix, label, expiry, revocation."""
    rows = api_get("/tokens")
    if json_output:
        emit_json(rows)
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else f"expires {row['expires_at'] or 'never'}"
        typer.echo(f"{row['id']:>5}  {row['prefix']}…  {row['label'] or '-':<12}  {state}")


@token_app.command("create")
def token_create(
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
    expires_days: Annotated[int, typer.Option(min=1, max=365, help="Lifetime in days.")] = 30,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a token for yourself (printed once)."""
    issued = api_request(
        "POST", "/tokens", json_body={"label": label, "expires_days": expires_days}
    )
    if json_output:
        emit_json(issued)
    else:
        typer.echo(f"{issued['token']}\n(expires {issued['expires_at']}; shown once)")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id from `token list`.")],
) -> None:
    """Revoke one of your tokens."""
    api_request("DELETE", f"/tokens/{token_id}")
    typer.echo(f"token {token_id} revoked")


project_app = typer.Typer(help="Projects: named groups of users (client).", no_args_is_help=True)


def _print_project(project: dict[str, object], json_output: bool) -> None:
    if json_output:
        emit_json(project)
        return
    typer.echo(f"{project['name']}  {project['title']}")
    members = project["members"]
    assert isinstance(members, list)  # noqa: S101 - the API's shape
    for member in members:
        typer.echo(f"  {member['user']} ({member['role']})")


@project_app.command("list")
def project_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Your projects (admins: all)."""
    projects = api_get("/projects")
    if json_output:
        emit_json(projects)
        return
    for project in projects:
        typer.echo(
            f"{project['name']:<24} {len(project['members']):>3} members  {project['title']}"
        )


@project_app.command("create")
def project_create(
    name: Annotated[str, typer.Argument(help="Short name: a-z, 0-9, '.', '_', '-'.")],
    title: Annotated[str, typer.Option(help="A descriptive title.")] = "",
    idp_group: Annotated[
        str | None, typer.Option(help="Identity-provider group whose members join at login.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a project (admins)."""
    body = {"name": name, "title": title, "idp_group": idp_group}
    _print_project(api_request("POST", "/projects", json_body=body), json_output)


@project_app.command("show")
def project_show(
    name: Annotated[str, typer.Argument(help="Project name.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A project and its members."""
    _print_project(api_get(f"/projects/{name}"), json_output)


@project_app.command("add-member")
def project_add_member(
    name: Annotated[str, typer.Argument(help="Project name.")],
    user: Annotated[str, typer.Argument(help="Account name.")],
    lead: Annotated[bool, typer.Option("--lead", help="Make them a lead.")] = False,
) -> None:
    """Put a user in a project (admins and the project's leads)."""
    body = {"user": user, "role": "lead" if lead else "member"}
    _print_project(api_request("POST", f"/projects/{name}/members", json_body=body), False)


@project_app.command("remove-member")
def project_remove_member(
    name: Annotated[str, typer.Argument(help="Project name.")],
    user: Annotated[str, typer.Argument(help="Account name.")],
) -> None:
    """Take a user out of a project (admins and the project's leads)."""
    _print_project(api_request("DELETE", f"/projects/{name}/members/{user}"), False)


audit_app = typer.Typer(
    help="What auditors read inside the platform (client).", no_args_is_help=True
)


@audit_app.command("access-log")
def audit_access_log(
    start: Annotated[int, typer.Option(min=0, help="First ledger index.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many entries.")] = 100,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sign-ins, failures, lockouts and account changes, with account names (auditor, admin)."""
    entries = api_get("/audit/access-log", {"start": start, "limit": limit})
    if json_output:
        emit_json(entries)
        return
    for entry in entries:
        typer.echo(
            f"{entry['index']:>7}  {entry['time']}  {entry['type']:<28} "
            f"{entry['actor_name']} -> {entry['subject_name']}"
        )


def whoami(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show who the saved or $INSITU_TOKEN token belongs to."""
    me = api_get("/whoami")
    if json_output:
        emit_json(me)
    else:
        typer.echo(f"{me['name']} ({me['role']})")
