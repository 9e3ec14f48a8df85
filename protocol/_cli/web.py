"""Web application commands: serve, users add/list/disable, sites add/list. Each parses its
arguments, calls one library function and prints the result."""

import sys
from enum import Enum
from typing import Annotated, Any

import typer

from ._common import Db, _run, app


class Role(str, Enum):
    coordinator = "coordinator"
    pharmacist = "pharmacist"
    investigator = "investigator"
    monitor = "monitor"
    admin = "admin"


users_app = typer.Typer(help="User accounts of the web application.\n\nExample: protocol users add alice "
                        "--role coordinator --site uk-leeds --password-stdin", no_args_is_help=True,
                        rich_markup_mode=None)
sites_app = typer.Typer(help="Trial sites (centres); every patient belongs to one.\n\nExample: protocol sites add "
                        "uk-leeds", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(users_app, name="users")
app.add_typer(sites_app, name="sites")

SecretFile = Annotated[str | None, typer.Option(
    "--secret-file", help="The file of the key that signs the web forms' CSRF tokens. Default: "
    "$PROTOCOL_WEB_SECRET_FILE, else DB.web-secret beside an SQLite registry, else "
    "~/.config/protocol/USER@HOST_PORT_DBNAME.web-secret for PostgreSQL.", metavar="FILE", show_default=False)]


def _open(db: Any) -> Any:
    from .._registry import open_registry

    return open_registry(db, create=True)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user name (unique, never reused).", metavar="NAME")],
    role: Annotated[Role, typer.Option("--role", help="coordinator, pharmacist, investigator, monitor or admin.")],
    site: Annotated[list[str] | None, typer.Option("--site", help="A site the user works with (repeat for more).",
                                                   metavar="SITE", show_default=False)] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard "
                                                 "input (first line) instead of prompting.")] = False,
    db: Db = None,
) -> None:
    """Create a user: at least 12 characters of password, not a common one.

    Example: printf '%s\\n' 'a long pass phrase' | protocol users add alice --role coordinator --site uk-leeds --password-stdin
    """
    from .._auth import add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)

    def add() -> Any:
        with _open(db) as reg:
            return add_user(reg, name, role.value, site or [], password)

    user = _run(add)
    typer.echo(f"added user {user.name} ({user.role}" + (f"; sites {', '.join(user.sites)}" if user.sites else "")
               + ")")


@users_app.command("list")
def users_list(json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
               db: Db = None) -> None:
    """List the users: name, role, sites, created, disabled.

    Example: protocol users list
    """
    from .._auth import list_users

    def users() -> Any:
        with _open(db) as reg:
            return list_users(reg)

    rows = _run(users)
    if json_output:
        from .._loading import dumps

        sys.stdout.write(dumps({"users": [u.to_dict() for u in rows]}))
        return
    if not rows:
        typer.echo("no users yet: protocol users add NAME --role admin")
        return
    for u in rows:
        typer.echo(f"{u.name}\t{u.role}\t{','.join(u.sites) or '-'}\tcreated {u.created}"
                   + (f"\tdisabled {u.disabled}" if u.disabled else ""))


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="The user name.", metavar="NAME")], db: Db = None) -> None:
    """Disable a user: no more sign-in, and its sessions end now.

    Example: protocol users disable alice
    """
    from .._auth import disable_user

    def disable() -> None:
        with _open(db) as reg:
            disable_user(reg, name)

    _run(disable)
    typer.echo(f"disabled {name}")


@sites_app.command("add")
def sites_add(site: Annotated[str, typer.Argument(help="The site id, e.g. uk-leeds.", metavar="SITE")],
              db: Db = None) -> None:
    """Add a site.

    Example: protocol sites add uk-leeds
    """
    from .._auth import add_site

    def add() -> None:
        with _open(db) as reg:
            add_site(reg, site)

    _run(add)
    typer.echo(f"added site {site}")


@sites_app.command("list")
def sites_list(db: Db = None) -> None:
    """List the sites with their number of patients.

    Example: protocol sites list
    """
    from .._auth import list_sites

    def sites() -> Any:
        with _open(db) as reg:
            return list_sites(reg)

    for site, count in _run(sites):
        typer.echo(f"{site}\t{count} patients")


@app.command("serve")
def serve_command(
    db: Db = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only; "
                                      "put a TLS reverse proxy in front for anything else).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    secret_file: SecretFile = None,
) -> None:
    """Serve the coordinator's web application (sign in at http://HOST:PORT/).

    Cookies are marked Secure unless the server listens on loopback; behind a TLS proxy the
    browser sees https and the Secure cookie. The first run on a registry without users
    prints how to create the first admin. The key that signs form tokens is read from the
    secret file (made 0600 on the first run; refused if group or others may read it), so
    restarts and several servers of one registry accept each other's forms.

    Example: protocol serve --db protocol.db --port 8000
    """
    from .._auth import list_users
    from .._registry import default_db_path

    path = default_db_path() if db is None else db
    with _run(_open, path) as reg:
        users = list_users(reg)
    if not users:
        typer.echo(f"no users yet in {path}: create the first admin with\n"
                   f"  protocol users add admin --role admin --db {path}", err=True)
    import uvicorn

    from ..web import create_app

    from .._websecret import secret_path

    secret = _run(secret_path, path, secret_file)
    application = _run(create_app, path, host=host, secret_file=secret)
    typer.echo(f"serving {path} on http://{host}:{port}/ (form tokens signed with the key in {secret}; "
               "Ctrl-C to stop)", err=True)
    uvicorn.run(application, host=host, port=port, log_level="warning", proxy_headers=True,
                server_header=False)


@app.command("rotate-secret")
def rotate_secret_command(db: Db = None, secret_file: SecretFile = None) -> None:
    """Write a new key for the web forms' CSRF tokens (replacing the old one atomically, 0600).

    Restart every `protocol serve` of the registry to use it; forms opened before the restart
    are refused once and must be reloaded. Signed-in sessions survive: they are kept in the
    registry, not signed with this key.

    Example: protocol rotate-secret --db protocol.db
    """
    from .._registry import default_db_path, open_registry
    from .._websecret import rotate_secret, secret_path

    path = default_db_path() if db is None else db

    def rotate() -> Any:
        with open_registry(path):  # a registry that exists (a mistyped --db writes nothing)
            pass
        return rotate_secret(secret_path(path, secret_file))

    written = _run(rotate)
    typer.echo(f"wrote a new web secret to {written} (mode 600)\n"
               "restart every `protocol serve` of this registry to use it; open forms must then be reloaded "
               "(they are refused once with \"Form expired\"); signed-in sessions survive (they are kept in "
               "the registry, not signed with this key)")
