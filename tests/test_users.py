"""The users file (``scripts/users.py``, ``pipelines/studio/users.py``), roles, and the login throttle's rules."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import app as app_module
from pipelines.studio.throttle import LoginThrottle
from pipelines.studio.users import User, UserBook, hash_password, parse_line, read_users, verify_password
from tests.conftest import ROOT

SCRIPT = [sys.executable, str(ROOT / "scripts" / "users.py")]


def users_cli(*args: str, password: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, *args], input=password + "\n", capture_output=True, text=True, timeout=60)


def test_a_password_is_stored_as_a_salted_scrypt_hash_with_its_parameters():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and "correct horse" not in first  # a fresh salt each time
    assert first.startswith("$scrypt$n=16384,r=8,p=1$")
    assert verify_password("correct horse", first) and not verify_password("correct hors", first)
    cheaper = hash_password("correct horse", n=2**10, r=4)  # other parameters still verify: they are in the line
    assert cheaper.startswith("$scrypt$n=1024,r=4,p=1$") and verify_password("correct horse", cheaper)
    assert not verify_password("x", "$scrypt$n=1024,r=8,p=1$bad$line")  # a damaged line never logs in
    assert not verify_password("x", "$scrypt$n=4194304,r=8,p=1$AAAA$AAAA")  # parameters that need 4 GiB: refused
    with pytest.raises(ValueError):
        hash_password("")


def test_lines_roles_and_who_is_admin():
    hashed = hash_password("pw-12345678", n=2**10)
    assert parse_line(f"ana:{hashed}:admin") == User("ana", hashed, "admin")
    assert parse_line("bo:old:pass:word").secret == "old:pass:word" and parse_line("bo:x").plain
    with pytest.raises(ValueError, match="unknown role"):
        parse_line(f"cy:{hashed}:boss")
    with pytest.raises(ValueError, match="user:password"):
        parse_line("nocolon")
    roles = UserBook([User("ana", hashed, "admin"), User("bo", hashed, "creator"), User("old", "pw")])
    assert roles.is_admin("ana") and not roles.is_admin("bo") and not roles.is_admin("old")
    assert roles.sees_everyone("ana") and not roles.sees_everyone("bo") and not roles.is_admin(None)
    assert roles.check("ana", "pw-12345678") and not roles.check("ana", "nope") and roles.check("old", "pw")
    assert not roles.check("nobody", "pw-12345678")
    no_roles = UserBook([User("ana", hashed), User("bo", "pw")])  # no role anywhere: everyone an admin, as before
    assert no_roles.is_admin("bo") and not no_roles.sees_everyone("ana")


def test_the_users_script_adds_changes_lists_and_removes_users(tmp_path):
    users = tmp_path / "users.txt"
    added = users_cli("add", "ana", "--role", "admin", "--file", str(users), password="first-pass-1")
    assert added.returncode == 0, added.stderr
    assert users_cli("add", "bo", "--file", str(users), password="bo-pass-123").returncode == 0
    text = users.read_text(encoding="utf-8")
    assert "first-pass-1" not in text and "bo-pass-123" not in text
    if os.name == "posix":
        assert users.stat().st_mode & 0o077 == 0  # readable by its owner only
    again = users_cli("add", "ana", "--file", str(users), password="other-pass-1")
    assert again.returncode == 1 and "already" in again.stderr
    short = users_cli("add", "cy", "--file", str(users), password="short")
    assert short.returncode == 1 and "8 characters" in short.stderr
    assert users_cli("passwd", "ana", "--file", str(users), password="second-pass-2").returncode == 0
    book = UserBook(read_users(users))
    assert book.check("ana", "second-pass-2") and not book.check("ana", "first-pass-1") and book.is_admin("ana")
    listed = users_cli("list", "--file", str(users)).stdout
    assert "ana\tadmin\thashed" in listed and "bo\t-\thashed" in listed
    assert users_cli("remove", "bo", "--file", str(users)).returncode == 0
    assert [user.name for user in read_users(users)] == ["ana"]
    missing = users_cli("remove", "zed", "--file", str(users))
    assert missing.returncode == 1 and "no user zed" in missing.stderr


def test_old_plain_lines_still_work_with_a_warning_that_names_the_fix(tmp_path, caplog):
    users = tmp_path / "users.txt"
    users.write_text("# old file\nana:pw:with:colons\nbo:bo-pw\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="cinescribe"):
        book = app_module.load_users("carla:carla-pw", users)
    assert book.check("ana", "pw:with:colons") and book.check("carla", "carla-pw") and book.is_admin("bo")
    warning = "\n".join(record.getMessage() for record in caplog.records)
    assert "plain-text passwords" in warning and f"scripts/users.py convert --file {users}" in warning
    assert "bo-pw" not in warning  # names, never passwords
    converted = users_cli("convert", "--file", str(users))
    assert converted.returncode == 0 and "2 plain" in converted.stdout
    assert "bo-pw" not in users.read_text(encoding="utf-8")
    book = UserBook(read_users(users))
    assert book.check("bo", "bo-pw") and not any(user.plain for user in book.users.values())
    assert app_module.load_users(None, None) is None
    bad = tmp_path / "bad.txt"
    bad.write_text(f"ana:{hash_password('pw-12345678', n=2**10)}:king\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="line 1"):
        app_module.load_users(None, bad)


def test_the_throttle_locks_a_pair_then_an_address_with_doubling_waits():
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, lockout_s=10, max_lockout_s=25, address_failures=50, clock=lambda: now[0])
    assert [throttle.failed("ana", "1.2.3.4") for _ in range(2)] == [None, None]
    lockout = throttle.failed("ana", "1.2.3.4")
    assert lockout is not None and lockout.seconds == 10 and not lockout.whole_address
    assert throttle.wait("ana", "1.2.3.4") == 10 and throttle.wait("bo", "1.2.3.4") == 0
    assert throttle.wait("ana", "5.6.7.8") == 0  # another address: not locked
    now[0] += 10
    assert throttle.wait("ana", "1.2.3.4") == 0
    assert throttle.failed("ana", "1.2.3.4").seconds == 20  # one more failure: locked again, twice as long
    now[0] += 20
    assert throttle.failed("ana", "1.2.3.4").seconds == 25  # capped
    now[0] += 25
    throttle.succeeded("ana", "1.2.3.4")
    assert throttle.failed("ana", "1.2.3.4") is None  # a success starts the count again
    assert throttle.failed("ana", "1.2.3.4") is None and throttle.failed("ana", "1.2.3.4").seconds == 10
    now[0] += 10
    assert throttle.failed("ana", "1.2.3.4").seconds == 20
    now[0] += 100  # quiet for longer than the longest wait: the waits start small again
    assert [throttle.failed("ana", "1.2.3.4") for _ in range(2)] == [None, None]
    assert throttle.failed("ana", "1.2.3.4").seconds == 10
    # Five failures from one address, whatever the names: the whole address waits.
    place = LoginThrottle(max_failures=3, lockout_s=10, max_lockout_s=25, address_failures=5, clock=lambda: now[0])
    results = [place.failed(f"user{i}", "9.9.9.9") for i in range(5)]
    assert results[:4] == [None] * 4 and results[4].whole_address
    assert place.wait("someone-else", "9.9.9.9") == 10 and place.wait("someone-else", "9.9.9.8") == 0
    with pytest.raises(ValueError):
        LoginThrottle(max_failures=0)
