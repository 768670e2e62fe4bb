"""Database URLs: parsed once, checked once, and shown only without their password.

A URL reaches the service from ``DATABASE_URL`` or ``--database-url`` and then goes to
three drivers (aiosqlite or asyncpg for the service, sqlite3 or psycopg for migrations and
APScheduler's job store) and into banners, logs and error messages. Parsing it in one
place means a malformed URL is one line naming what is wrong (never a driver's traceback
quoting the whole URL, password included), and every message uses the same redacted form.

TLS to PostgreSQL is set in the URL the conventional (libpq) way: ``sslmode``,
``sslrootcert``, ``sslcert``, ``sslkey``. psycopg is libpq, so it takes them as they are.
asyncpg takes none of them as keyword arguments, but understands them in a DSN with
libpq's exact meaning; :func:`_asyncpg_tls` hands them over that way for every asyncpg
engine, including those other modules create from the same URL. Any other option is
refused with the list of accepted ones: a driver would otherwise fail at the first
connection with a traceback, or silently ignore a misspelt ``sslmode``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# URL schemes accepted, and the async driver each one means.
URL_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}
SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_FILES = ("sslrootcert", "sslcert", "sslkey")
PG_OPTIONS = ("sslmode", *TLS_FILES)
# asyncpg's own spelling of the mode, accepted and written as sslmode.
OPTION_ALIASES = {"ssl": "sslmode"}
ACCEPTED = (
    "use sqlite:///path.db (or sqlite+aiosqlite:///path.db) or "
    "postgresql://user:password@host:5432/dbname (postgres://, postgresql+asyncpg:// also work)"
)
_USERINFO = re.compile(r"^((?:[^:/?#]*://)?[^:/@?#]*:)[^@]*@")
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#\s]*:)[^@\s]*@")


class DatabaseUrlError(ValueError):
    """A database URL that cannot be used; the message is one line without the password."""


def redact(url: str) -> str:
    """``url`` with its password shown as ``***``, even when the URL does not parse."""
    try:
        return DatabaseUrl(make_url(url.strip())).redacted
    except (ArgumentError, ValueError):
        return _USERINFO.sub(r"\1***@", url.strip())


def redact_urls_in(text: str) -> str:
    """``text`` (an argparse message, say) with the password of every URL in it as ``***``."""
    return _URL_USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True)
class DatabaseUrl:
    """A checked database URL: the async driver's URL, and what is derived from it."""

    url: URL

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    @property
    def async_url(self) -> str:
        """The URL the service's engine uses (password included: never print it)."""
        return self.url.render_as_string(hide_password=False)

    @property
    def sync_url(self) -> str:
        """The same database through the sync driver (alembic, APScheduler's job store)."""
        driver = SYNC_DRIVERS.get(self.url.drivername, self.url.drivername)
        return self.url.set(drivername=driver).render_as_string(hide_password=False)

    @property
    def redacted(self) -> str:
        """The form every message shows: the password as ``***``, and the options as
        they were written (``sslrootcert=/etc/ca.pem``, not ``%2Fetc%2Fca.pem``)."""
        base = self.url.set(query={}).render_as_string(hide_password=True)
        options = "&".join(
            f"{name}={value}"
            for name, values in self.url.query.items()
            for value in ((values,) if isinstance(values, str) else values)
        )
        return f"{base}?{options}" if options else base

    def scrub(self, text: str) -> str:
        """``text`` (a driver's error, say) with the password replaced by ``***``."""
        password = self.url.password
        if not password:
            return text
        for form in sorted({str(password), quote(str(password), safe="")}, key=len, reverse=True):
            text = text.replace(form, "***")
        return text


def parse_database_url(value: str) -> DatabaseUrl:
    """Parse and check ``value``; raise ``DatabaseUrlError`` (one line, no password)."""
    text = value.strip()
    shown = redact(text)
    try:
        url = make_url(text)
    except ArgumentError:
        raise DatabaseUrlError(f"not a database URL {shown!r}; {ACCEPTED}") from None
    except ValueError:  # SQLAlchemy converts the port with int()
        raise DatabaseUrlError(
            f"not a database URL {shown!r}: the port must be a number from 1 to 65535"
        ) from None
    driver = URL_SCHEMES.get(url.drivername)
    if driver is None:
        raise DatabaseUrlError(f"unsupported database URL {shown!r}; {ACCEPTED}")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise DatabaseUrlError(f"database URL {shown!r}: port {url.port} is not from 1 to 65535")
    url = url.set(drivername=driver)
    if url.get_backend_name() == "sqlite":
        if url.query:
            raise DatabaseUrlError(
                f"database URL {shown!r}: SQLite URLs take no options "
                f"(got {', '.join(sorted(url.query))}); use sqlite:///path.db"
            )
        return DatabaseUrl(url)
    return DatabaseUrl(url.set(query=_pg_options(url, shown)))


def _pg_options(url: URL, shown: str) -> dict[str, str]:
    """The URL's options under their libpq names, each checked."""
    options: dict[str, str] = {}
    for key, raw in url.query.items():
        name = OPTION_ALIASES.get(key, key)
        if name not in PG_OPTIONS:
            raise DatabaseUrlError(
                f"database URL {shown!r}: unknown option {key!r}; PostgreSQL URLs accept "
                f"{', '.join(PG_OPTIONS)} (e.g. ?sslmode=verify-full&sslrootcert=/path/ca.pem)"
            )
        if not isinstance(raw, str) or name in options:
            raise DatabaseUrlError(f"database URL {shown!r}: option {name} is given twice")
        options[name] = raw
    mode = options.get("sslmode")
    if mode is not None and mode not in SSL_MODES:
        raise DatabaseUrlError(
            f"database URL {shown!r}: sslmode {mode!r} is not one of {', '.join(SSL_MODES)}"
        )
    for name in TLS_FILES:
        path = options.get(name)
        if path is None:
            continue
        if not Path(path).is_file():
            raise DatabaseUrlError(f"database URL {shown!r}: {name}: no file at {path}")
    return options


@event.listens_for(PGDialect_asyncpg, "do_connect")
def _asyncpg_tls(_dialect: Any, _record: Any, _cargs: list[Any], cparams: dict[str, Any]) -> None:
    """Hand the URL's libpq TLS options to asyncpg in a DSN, where it reads them with
    libpq's meaning (as keyword arguments it would refuse them). Registered on the
    dialect class, so an asyncpg engine made anywhere from a checked URL connects the
    same way; a URL without these options is left exactly as it was."""
    options = {name: cparams.pop(name) for name in PG_OPTIONS if name in cparams}
    if options:
        cparams["dsn"] = "postgresql://?" + urlencode(options)
