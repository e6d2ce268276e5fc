"""The demo's checks log in as the README's least-privilege monitoring role (README, Least privilege),
which the demo creates on its server; a server that refuses to create it leaves the given role, said
in one line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import pytest
import sqlalchemy as sa

from ops.devkit.demo import _monitoring_role
from worker.fleet.db import checks_role_warnings, create


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (RFC 5803: iterations:salt$StoredKey:ServerKey) is of `password`."""
    algorithm, rest = verifier.split("$", 1)
    (iterations, salt), (stored_key, _) = (part.split(":") for part in rest.split("$"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return algorithm == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == base64.b64decode(stored_key)


def _drop_role(admin: sa.Engine, role: str) -> None:
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))  # its grants and default privileges here, CONNECT too
        conn.execute(sa.text(f"DROP ROLE {role}"))


@pytest.fixture
def app_database(fresh_database):
    """A database with one application table, as the demo has it once the schemas exist."""
    url = fresh_database()
    admin = create(url, pool_size=1)
    with admin.begin() as conn:
        conn.execute(sa.text("CREATE TABLE registrations (id serial PRIMARY KEY, status text)"))
    yield url, admin
    admin.dispose()


def test_the_checks_url_logs_in_as_a_role_that_reads_and_cannot_write(app_database, capsys):
    url, admin = app_database
    role = f"opsfleet_demo_mon_{uuid.uuid4().hex[:8]}"
    urls = _monitoring_role(url, {"app": url}, role=role)
    try:
        assert sa.make_url(urls["app"]).username == role and sa.make_url(urls["app"]).password
        assert f"checks: as {role}" in capsys.readouterr().out
        with admin.connect() as conn:  # stored hashed, and the hash is of the URL's password
            stored = conn.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}).scalar()
        assert _scram_matches(stored, sa.make_url(urls["app"]).password), stored[:20]
        with admin.begin() as conn:  # a table made after the grants: the default privileges cover it
            conn.execute(sa.text("CREATE TABLE seats (id int)"))
        monitor = create(urls["app"], pool_size=1)
        try:
            with monitor.connect() as conn:
                assert conn.execute(sa.text("SELECT current_user")).scalar() == role
                conn.execute(sa.text("SELECT count(*) FROM registrations")).scalar()
                conn.execute(sa.text("SELECT count(*) FROM seats")).scalar()
                assert conn.execute(sa.text("SELECT pg_has_role('pg_monitor', 'MEMBER')")).scalar()
            with monitor.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="permission denied"):
                conn.execute(sa.text("INSERT INTO registrations (status) VALUES ('x')"))
            assert checks_role_warnings(monitor) == []  # `opsfleet health`'s checks role line: ok
        finally:
            monitor.dispose()
    finally:
        _drop_role(admin, role)


def test_a_server_that_refuses_to_create_the_role_leaves_the_given_one_in_one_line(app_database, capsys):
    url, admin = app_database
    plain, role = f"opsfleet_plain_{uuid.uuid4().hex[:8]}", f"opsfleet_demo_mon_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {plain} LOGIN"))  # no CREATEROLE, not a superuser
    try:
        given = sa.make_url(url).set(username=plain).render_as_string(hide_password=False)
        assert _monitoring_role(given, {"app": url}, role=role) == {"app": url}
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert len(lines) == 1 and f"refuses to create {role}" in lines[0] and "permission denied" in lines[0], lines
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar() == 0
    finally:
        _drop_role(admin, plain)
