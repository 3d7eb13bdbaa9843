"""Connection parameters from options and URLs (plugins/module_utils/postgres.py)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg


def test_url_is_parsed_and_unquoted():
    params = pg.parse_db_url('postgresql://app%40corp:p%3Ass%2Fw@db.example:6543/app%20db?sslmode=require')
    assert params == dict(user='app@corp', password='p:ss/w', host='db.example', port=6543, dbname='app db',
                          sslmode='require')


def test_a_prisma_database_url_is_accepted_and_its_prisma_only_options_left_out():
    """runbook_database as a Prisma app's DATABASE_URL reaches the backup and the flags as it is."""
    params = pg.parse_db_url('postgresql://app:pw@db:5432/app?schema=cases&connection_limit=5&sslmode=require')
    assert params == dict(user='app', password='pw', host='db', port=5432, dbname='app', sslmode='require')


@pytest.mark.parametrize('url,fragment', [
    ('mysql://u:p@h/db', 'must start with postgres://'),
    ('postgres://u:p@h:notaport/db', 'not a valid URL'),
    ('postgres://u@h/db?sslmod=require', "unsupported query parameter 'sslmod'"),
])
def test_bad_urls_name_the_problem_without_the_password(url, fragment):
    with pytest.raises(pg.PostgresError) as err:
        pg.parse_db_url(url)
    assert fragment in str(err.value)
    assert ':p@' not in str(err.value)


def test_explicit_options_override_the_url_and_defaults_apply():
    conn = pg.connection_from_params(dict(db_url='postgres://u:secret@h:7000/app', login_port=7001, db=None,
                                          login_user=None, login_password=None, login_host=None,
                                          login_unix_socket=None, ssl_mode=None, ca_cert=None, connect_timeout=5))
    assert conn == dict(user='u', password='secret', host='h', port=7001, dbname='app', connect_timeout=5)
    conn = pg.connection_from_params(dict(db='app', connect_timeout=None))
    assert (conn['port'], conn['user'], 'host' in conn) == (5432, 'postgres', False)


def test_a_database_is_required():
    with pytest.raises(pg.PostgresError, match='no database given'):
        pg.connection_from_params(dict(login_host='h'))


def test_passfile_is_private_escaped_and_for_one_host_port_database_user(tmp_path):
    conn = dict(password='a:b\\c', host='h', port=5432, user='u', dbname='d:1')
    path = pg.write_passfile(conn, str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read() == 'h:5432:d\\:1:u:a\\:b\\\\c\n'
    socket = pg.write_passfile(dict(conn, host='/run/pg'), str(tmp_path), databases=['x', 'y'])
    assert open(socket).read().splitlines() == ['localhost:5432:x:u:a\\:b\\\\c', 'localhost:5432:y:u:a\\:b\\\\c']
    assert pg.write_passfile(dict(password=None), str(tmp_path)) is None


def test_libpq_environment_carries_the_password_for_the_child_only():
    env = pg.libpq_environment(dict(port=5432, user='u', dbname='d', host='h', password='s3cret'))
    assert env['PGPASSWORD'] == 's3cret' and 'PGPASSFILE' not in env
    assert env['PGDATABASE'] == 'd'
    assert pg.libpq_environment(dict(port=5432, user='u', dbname='d'))['PGPASSWORD'] == ''


@pytest.mark.parametrize('name,conninfo', [
    ('app', "dbname='app'"),
    ('host=127.0.0.1 port=1 dbname=x', "dbname='host=127.0.0.1 port=1 dbname=x'"),
    ("it's\\", "dbname='it\\'s\\\\'"),
    ('postgres://evil/x', "dbname='postgres://evil/x'"),
])
def test_dbname_conninfo_quotes_the_name_as_a_value(name, conninfo):
    assert pg.dbname_conninfo(name) == conninfo


@pytest.mark.parametrize('requested,free,extra,jobs', [
    (8, 100, 1, 8), (40, 3, 1, 2), (40, 0, 1, 1), (4, -5, 2, 1), (200, 1000, 1, pg.MAX_JOBS),
])
def test_bound_jobs(requested, free, extra, jobs):
    assert pg.bound_jobs(requested, free, extra) == jobs


def test_server_headroom():
    assert pg.server_headroom(20) == 3 and pg.server_headroom(200) == 20


def test_connect_errors_get_a_hint():
    class Err(Exception):
        pass
    assert 'login_password' in pg.explain_connect_error(Err('FATAL:  password authentication failed for user "x"'))
    assert 'login_port' in pg.explain_connect_error(Err('connection to server failed: Connection refused'))
    assert pg.explain_connect_error(Err('something else')) == 'something else'
