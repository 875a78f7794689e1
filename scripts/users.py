"""Manage the studio's users file (for ``app.py --auth-file FILE``): hashed passwords and roles.

    python scripts/users.py add alice --role admin --file users.txt     # asks for the password
    python scripts/users.py add bo --file users.txt < password.txt       # or reads it from stdin
    python scripts/users.py passwd bo --file users.txt
    python scripts/users.py remove bo --file users.txt
    python scripts/users.py list --file users.txt
    python scripts/users.py convert --file users.txt                     # hash old user:password lines

Passwords are stored as salted scrypt hashes (``pipelines/studio/users.py``), never as typed. Roles:
``admin`` (restart, release VRAM, benchmark, cluster workers, models, everyone's History and files) and
``creator`` (their own jobs, History and files). A file without any role makes every user an admin.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.studio.users import ROLES, User, check_name, hash_password, read_users, write_users  # noqa: E402


def read_password(stdin=None) -> str:
    """The new password: typed twice on a terminal (not shown), else the first line of standard input."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise ValueError("The two passwords differ.")
        password = first
    else:
        password = stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise ValueError("The password must be at least 8 characters long.")
    return password


def _load(path: Path, must_exist: bool) -> list[User]:
    if not path.exists():
        if must_exist:
            raise ValueError(f"{path} does not exist.")
        return []
    return read_users(path)


def run(args: argparse.Namespace) -> str:
    """Carry out one command; returns what to print. ``ValueError`` for anything the user must fix."""
    path: Path = args.file
    users = _load(path, must_exist=args.command != "add")
    by_name = {user.name: user for user in users}
    if args.command == "list":
        rows = [f"{user.name}\t{user.role or '-'}\t{'PLAIN TEXT: run convert' if user.plain else 'hashed'}"
                for user in users]
        return "\n".join(["name\trole\tpassword", *rows]) if rows else f"{path} has no users."
    if args.command == "convert":
        plain = [user for user in users if user.plain]
        for user in plain:
            user.secret = hash_password(user.secret)
        write_users(path, users)
        return f"Hashed {len(plain)} plain password(s) in {path}."
    name = check_name(args.name)
    if args.command == "add":
        if name in by_name:
            raise ValueError(f"{name} is already in {path}; use passwd to change the password.")
        users.append(User(name, hash_password(read_password()), args.role or ""))
        write_users(path, users)
        return f"Added {name}{f' ({args.role})' if args.role else ''} to {path}."
    if name not in by_name:
        raise ValueError(f"There is no user {name} in {path}.")
    if args.command == "remove":
        write_users(path, [user for user in users if user.name != name])
        return f"Removed {name} from {path}."
    by_name[name].secret = hash_password(read_password())  # passwd
    if args.role:
        by_name[name].role = args.role
    write_users(path, users)
    return f"Changed the password of {name} in {path}."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="users.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (("add", "add a user"), ("passwd", "change a user's password (and role)"),
                          ("remove", "remove a user")):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("name")
        sub.add_argument("--file", type=Path, required=True, help="the users file (--auth-file)")
        if command != "remove":
            sub.add_argument("--role", choices=ROLES, help="admin or creator (none given anywhere: all are admins)")
    for command, text in (("list", "list the users, their roles, and any plain-text password left"),
                          ("convert", "hash the plain user:password lines of an old file")):
        commands.add_parser(command, help=text).add_argument("--file", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(run(args))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
