"""The studio's users: names, roles and salted scrypt password hashes, one user a line in a text file.

A line reads ``name:$scrypt$n=16384,r=8,p=1$<salt>$<hash>:role`` (salt and hash in base64, role ``admin``,
``creator`` or empty). ``hashlib.scrypt`` is memory-hard (``n * r * 128`` bytes: 16 MiB with the
defaults), so guessing passwords offline from a stolen file is slow; the parameters travel in the line, so
stronger ones later still read old lines. Old ``name:password`` lines are still read (``plain`` is set).
``scripts/users.py`` writes the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

ROLES = ("admin", "creator")
SCHEME = "$scrypt$"
DEFAULT_PARAMS = {"n": 2**14, "r": 8, "p": 1}
SALT_BYTES = 16
HASH_BYTES = 32
MAX_MEMORY = 2**28  # refuse lines whose parameters would need more than 256 MiB to check
CONVERT_HINT = "python scripts/users.py convert --file {file}"


@dataclass
class User:
    name: str
    secret: str  # the "$scrypt$..." hash, or the password itself for an old plain line
    role: str = ""  # "admin", "creator" or "" (not given)

    @property
    def plain(self) -> bool:
        return not self.secret.startswith(SCHEME)

    def line(self) -> str:
        return f"{self.name}:{self.secret}:{self.role}" if self.role else f"{self.name}:{self.secret}"


def hash_password(password: str, salt: bytes | None = None, **params: int) -> str:
    """A ``$scrypt$n=..,r=..,p=..$salt$hash`` string for ``password`` (a fresh random salt unless given)."""
    if not password:
        raise ValueError("The password is empty.")
    values = {**DEFAULT_PARAMS, **params}
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, values)
    spec = ",".join(f"{key}={values[key]}" for key in ("n", "r", "p"))
    return f"{SCHEME}{spec}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, secret: str) -> bool:
    """Whether ``password`` matches ``secret`` (a hash, or a plain password of an old line); constant time."""
    if not secret.startswith(SCHEME):
        return hmac.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))
    try:
        spec, salt, digest = secret[len(SCHEME):].split("$")
        values = {key: int(value) for key, value in (part.split("=") for part in spec.split(","))}
        expected = base64.b64decode(digest, validate=True)
        tried = _scrypt(password, base64.b64decode(salt, validate=True), values, len(expected))
    except (ValueError, TypeError, KeyError):  # a damaged line never logs anyone in
        return False
    return hmac.compare_digest(tried, expected)


def _scrypt(password: str, salt: bytes, values: dict, length: int = HASH_BYTES) -> bytes:
    n, r, p = values["n"], values["r"], values["p"]
    if 128 * n * r * p > MAX_MEMORY or n < 2 or n & (n - 1):
        raise ValueError(f"unusable scrypt parameters n={n}, r={r}, p={p}")
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY + 2**20,
                          dklen=length)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_name(name: str) -> str:
    name = name.strip()
    if not name or ":" in name or "," in name or any(ch.isspace() for ch in name):
        raise ValueError(f"A user name must be one word without ':' or ',', not {name!r}.")
    return name


def parse_line(line: str) -> User:
    """One line of a users file (``name:$scrypt$...[:role]`` or the old ``name:password``)."""
    name, sep, rest = line.strip().partition(":")
    if not sep or not name.strip() or not rest:
        raise ValueError(f"Auth entries must look like user:password or user:$scrypt$...:role, not {line.strip()!r}.")
    if rest.startswith(SCHEME):
        secret, _, role = rest.partition(":")
        if role not in ("", *ROLES):
            raise ValueError(f"User {name.strip()!r} has the unknown role {role!r} (roles: {', '.join(ROLES)}).")
        return User(name.strip(), secret, role)
    return User(name.strip(), rest)


def read_users(path: Path) -> list[User]:
    """The users of ``path`` in file order (blank lines and # comments skipped); ``ValueError`` names the line."""
    users = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                users.append(parse_line(line))
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: {error}") from None
    return users


def write_users(path: Path, users: list[User]) -> None:
    """Write ``users`` to ``path`` through a temporary file (readable by its owner only where that exists)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    text = "# Cinescribe users (scripts/users.py): name:$scrypt$parameters$salt$hash:role\n"
    text += "".join(user.line() + "\n" for user in users)
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


class UserBook:
    """Who may log in and with which role: ``check(name, password)`` and ``is_admin(name)``.

    Roles only count once some user has one: without any, every user is an admin (one shared studio, as
    before roles existed); with them, users without the ``admin`` role are creators.
    """

    def __init__(self, users: list[User]):
        self.users = {user.name: user for user in users}
        self.roles_in_use = any(user.role for user in users)
        self._dummy = hash_password("not a password", salt=b"0" * SALT_BYTES)

    def check(self, name: str, password: str) -> bool:
        user = self.users.get(name)
        if user is None:  # the same work as for a real user, so the timing does not tell names apart
            verify_password(password, self._dummy)
            return False
        return verify_password(password, user.secret)

    def is_admin(self, name: str | None) -> bool:
        if not self.roles_in_use:
            return True
        user = self.users.get(name or "")
        return user is not None and user.role == "admin"

    def sees_everyone(self, name: str | None) -> bool:
        """Whether ``name`` sees everyone's History and files: only users given the admin role."""
        user = self.users.get(name or "")
        return self.roles_in_use and user is not None and user.role == "admin"

    def __bool__(self) -> bool:
        return bool(self.users)
