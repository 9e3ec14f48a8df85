"""The web application's per-registry secret: the key that signs its CSRF tokens.

Every ``protocol serve`` of one registry must sign with the same key (or a form opened on one
server process is refused by another, and every restart expires the forms that are open), so
the key is kept in a file rather than made at start-up:

- ``--secret-file FILE``, else ``$PROTOCOL_WEB_SECRET_FILE``, else
- beside an SQLite registry: ``<registry>.web-secret`` (``protocol.db.web-secret``);
- for a PostgreSQL registry: ``$XDG_CONFIG_HOME/protocol/<user>@<host>_<port>_<dbname>.web-secret``
  (``~/.config`` without ``XDG_CONFIG_HOME``; the URL's password never goes in the name).
  Servers of one PostgreSQL registry on several machines need the same file on each: copy it,
  or point ``--secret-file`` at one shared file.

The file is made on first use from :func:`secrets.token_urlsafe` (32 bytes), mode ``0600``,
atomically: it appears complete or not at all, and two servers starting at once end up with
the same key. A file that group or others may read or write, that is empty, or shorter than
:data:`MIN_LENGTH` characters is refused (:class:`~protocol.RegistryError` naming the file:
exit 2 on the command line). :func:`rotate_secret` replaces it atomically.

Nothing else the server keeps is secret per server: sessions, calendar-feed tokens and
passwords live in the registry (as hashes), not in memory.

>>> secret_path("/srv/trial/protocol.db")
PosixPath('/srv/trial/protocol.db.web-secret')
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from ._errors import Problem, RegistryError

__all__ = ["ENV_VAR", "MIN_LENGTH", "SUFFIX", "load_secret", "rotate_secret", "secret_path"]

ENV_VAR = "PROTOCOL_WEB_SECRET_FILE"
SUFFIX = ".web-secret"
#: The shortest key accepted from a file (``token_urlsafe(32)`` makes 43 characters).
MIN_LENGTH = 32


def secret_path(db: str | os.PathLike[str], secret_file: str | os.PathLike[str] | None = None) -> Path:
    """Where the secret of the registry ``db`` is kept (see the module's docstring for the order).

    >>> secret_path("protocol.db", "/etc/protocol/web-secret")
    PosixPath('/etc/protocol/web-secret')
    >>> secret_path("postgresql://app:pw@db.example:5433/trial").name
    'app@db.example_5433_trial.web-secret'
    """
    if secret_file is not None and str(secret_file):
        return Path(secret_file)
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env)
    from ._db import parse_url

    url = parse_url(db)
    if url.path is not None:
        return url.path.with_name(url.path.name + SUFFIX)
    return _config_dir() / (_pg_name(url.dsn or "") + SUFFIX)


def _config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "protocol"


def _pg_name(dsn: str) -> str:
    """``user@host_port_dbname`` of a PostgreSQL URL, safe as a file name (no password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported when the registry opens
        parts = {}
    name = f"{parts.get('user') or ''}@{parts.get('host') or 'localhost'}_{parts.get('port') or '5432'}_" \
           f"{parts.get('dbname') or ''}"
    return re.sub(r"[^A-Za-z0-9@._-]", "-", name)


def load_secret(path: str | os.PathLike[str]) -> str:
    """The secret kept in ``path``, made first (``0600``, atomically) if there is none.

    Refused (:class:`~protocol.RegistryError` naming the file) when the file is readable or
    writable by group or others, is not a regular file, is empty, or is shorter than
    :data:`MIN_LENGTH` characters.

    >>> load_secret("protocol.db.web-secret")  # doctest: +SKIP
    'b0Vx…'
    """
    target = Path(path)
    if not target.exists():
        _create(target)
    try:
        info = os.stat(target)
    except OSError as exc:
        raise RegistryError(Problem(str(target), "", f"cannot read the web secret: {exc.strerror}")) from None
    if not stat.S_ISREG(info.st_mode):
        raise RegistryError(Problem(str(target), "", "expected the web secret as a file, got something else "
                                    "(a folder?)"))
    if info.st_mode & 0o077:
        raise RegistryError(Problem(str(target), "", f"expected the web secret readable by its owner only "
                                    f"(mode 600), got mode {stat.S_IMODE(info.st_mode):o}: anyone who reads it can "
                                    f"forge form tokens; run `chmod 600 {target}` and then "
                                    "`protocol rotate-secret`"))
    try:
        text = target.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise RegistryError(Problem(str(target), "", f"cannot read the web secret: {reason}")) from None
    if not text:
        raise RegistryError(Problem(str(target), "", "expected a web secret, got an empty file: run "
                                    "`protocol rotate-secret` to write a new one"))
    if len(text) < MIN_LENGTH:
        raise RegistryError(Problem(str(target), "", f"expected a web secret of at least {MIN_LENGTH} "
                                    f"characters, got {len(text)}: run `protocol rotate-secret` to write a new one"))
    return text


def rotate_secret(path: str | os.PathLike[str]) -> Path:
    """Write a new secret to ``path`` (replacing the old one atomically, ``0600``); its path.

    Servers read the secret when they start: restart them. Forms opened before then are
    refused once (reload them); sessions are kept in the registry and survive.

    >>> rotate_secret("protocol.db.web-secret")  # doctest: +SKIP
    PosixPath('protocol.db.web-secret')
    """
    target = Path(path)
    if target.is_dir():
        raise RegistryError(Problem(str(target), "", "expected the web secret as a file, got a folder"))
    tmp = _write_new(target)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RegistryError(Problem(str(target), "", f"cannot write the web secret: {exc.strerror}")) from None
    _sync_dir(target.parent)
    return target


def _create(target: Path) -> None:
    """Make ``target`` with a new secret unless another process made it first (no replace)."""
    tmp = _write_new(target)
    try:
        os.link(tmp, target)  # atomic and never replaces: a server that started first wins
    except FileExistsError:
        pass
    except OSError as exc:
        raise RegistryError(Problem(str(target), "", f"cannot write the web secret: {exc.strerror}")) from None
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(target.parent)


def _write_new(target: Path) -> Path:
    """A complete new secret in a temporary file beside ``target`` (``O_EXCL``, ``0600``); the
    default folder for PostgreSQL registries is made first (``0700``)."""
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.exists() and directory == _config_dir():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(Problem(str(target), "", f"cannot make the folder of the web secret: "
                                        f"{exc.strerror}")) from None
    tmp = directory / f".{target.name[:100]}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise RegistryError(Problem(str(target), "", f"cannot write the web secret: {exc.strerror}")) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory if str(directory) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
