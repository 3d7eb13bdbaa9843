# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection helpers shared by the runbook.deploy modules.

One place turns the module options (login_* options or a ``postgres://`` URL) into connection
parameters, opens psycopg2 connections, and builds the libpq environment for pg_dump, pg_restore
and psql.  Passwords travel in a 0600 passfile named by ``PGPASSFILE``, never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import re

try:
    from urllib.parse import parse_qsl, unquote, urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    pass

try:
    import psycopg2
    import psycopg2.extensions
    HAS_PSYCOPG2 = True
except ImportError:
    psycopg2 = None
    HAS_PSYCOPG2 = False


class PostgresError(Exception):
    """A PostgreSQL step failed; the message is ready for fail_json."""


def postgres_common_argument_spec():
    """Argument spec matching the runbook.deploy.postgres doc fragment."""
    return dict(
        login_host=dict(type='str', aliases=['host']),
        login_port=dict(type='int', aliases=['port']),
        login_user=dict(type='str', aliases=['login', 'user']),
        login_password=dict(type='str', no_log=True),
        login_unix_socket=dict(type='str', aliases=['unix_socket']),
        db=dict(type='str', aliases=['login_db', 'database']),
        db_url=dict(type='str', no_log=True, aliases=['database_url']),
        ssl_mode=dict(type='str', choices=['allow', 'disable', 'prefer', 'require', 'verify-ca', 'verify-full']),
        ca_cert=dict(type='path', aliases=['ssl_rootcert']),
        connect_timeout=dict(type='int', default=10),
    )


_URL_QUERY_KEYS = {
    'sslmode': 'sslmode',
    'sslrootcert': 'sslrootcert',
    'host': 'host',
    'port': 'port',
    'connect_timeout': 'connect_timeout',
    'application_name': 'application_name',
    'user': 'user',
    'password': 'password',
    'dbname': 'dbname',
}


def parse_db_url(url):
    """Split a ``postgres://user:pass@host:port/db?sslmode=...`` URL into libpq keywords.

    Raises PostgresError (without echoing the URL, which may hold a password) when it is malformed.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise PostgresError('db_url is not a valid URL (%s); expected postgres://user:password@host:port/dbname'
                            % _scrub(str(exc), url))
    if parts.scheme not in ('postgres', 'postgresql'):
        raise PostgresError("db_url must start with postgres:// or postgresql://, not '%s://'" % parts.scheme)
    params = {}
    if parts.username:
        params['user'] = unquote(parts.username)
    if parts.password is not None:
        params['password'] = unquote(parts.password)
    if parts.hostname:
        params['host'] = unquote(parts.hostname)
    if port:
        params['port'] = port
    dbname = unquote(parts.path.lstrip('/'))
    if dbname:
        params['dbname'] = dbname
    for key, value in parse_qsl(parts.query):
        if key not in _URL_QUERY_KEYS:
            raise PostgresError("db_url has an unsupported query parameter '%s'; supported: %s"
                                % (key, ', '.join(sorted(_URL_QUERY_KEYS))))
        params[_URL_QUERY_KEYS[key]] = value
    if 'port' in params:
        try:
            params['port'] = int(params['port'])
        except ValueError:
            raise PostgresError('db_url has a port that is not a number')
    return params


def _scrub(text, secret):
    return text.replace(secret, '********') if secret else text


def connection_from_params(params):
    """Connection keywords from module params: db_url first, explicit login_* options override it."""
    conn = {}
    if params.get('db_url'):
        conn.update(parse_db_url(params['db_url']))
    explicit = {
        'host': params.get('login_unix_socket') or params.get('login_host'),
        'port': params.get('login_port'),
        'user': params.get('login_user'),
        'password': params.get('login_password'),
        'dbname': params.get('db'),
        'sslmode': params.get('ssl_mode'),
        'sslrootcert': params.get('ca_cert'),
    }
    for key, value in explicit.items():
        if value not in (None, ''):
            conn[key] = value
    conn.setdefault('port', 5432)
    conn.setdefault('user', 'postgres')
    if params.get('connect_timeout'):
        conn['connect_timeout'] = params['connect_timeout']
    if not conn.get('dbname'):
        raise PostgresError('no database given: set db, or put the database name in db_url (postgres://host/DBNAME)')
    return conn


def describe(conn, dbname=None):
    """A human description of where we connect, without the password."""
    where = conn.get('host') or 'the local socket'
    return "database '%s' at %s:%s as user '%s'" % (dbname or conn.get('dbname'), where, conn.get('port'), conn.get('user'))


def _escape_passfile(value):
    return str(value).replace('\\', '\\\\').replace(':', '\\:')


def write_passfile(conn, directory):
    """Write a libpq passfile (0600) for conn's password into directory; return its path or None."""
    if conn.get('password') in (None, ''):
        return None
    path = os.path.join(directory, 'pgpass')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        # Wildcards: the passfile lives in a private directory for this one module run.
        handle.write('*:*:*:*:%s\n' % _escape_passfile(conn['password']))
    return path


def libpq_environment(conn, passfile, dbname=None):
    """Environment variables that point libpq tools at conn (the password stays in the passfile)."""
    env = {
        'PGPORT': str(conn['port']),
        'PGUSER': conn['user'],
        'PGDATABASE': dbname or conn['dbname'],
        'PGCONNECT_TIMEOUT': str(conn.get('connect_timeout') or 10),
        'PGAPPNAME': 'runbook.deploy',
        'PGPASSWORD': '',
    }
    if conn.get('host'):
        env['PGHOST'] = conn['host']
    if conn.get('sslmode'):
        env['PGSSLMODE'] = conn['sslmode']
    if conn.get('sslrootcert'):
        env['PGSSLROOTCERT'] = conn['sslrootcert']
    if passfile:
        env['PGPASSFILE'] = passfile
    return env


def connect(conn, dbname=None, autocommit=True):
    """Open a psycopg2 connection; raise PostgresError with a message that names the target."""
    kwargs = dict((k, v) for k, v in conn.items() if k in (
        'host', 'port', 'user', 'password', 'sslmode', 'sslrootcert', 'connect_timeout'))
    kwargs['dbname'] = dbname or conn['dbname']
    kwargs['application_name'] = 'runbook.deploy'
    try:
        connection = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        raise PostgresError('could not connect to %s: %s' % (describe(conn, kwargs['dbname']),
                                                             explain_connect_error(exc)))
    connection.autocommit = autocommit
    return connection


def explain_connect_error(exc):
    """Add the likely fix to psycopg2's connection error text."""
    text = str(exc).strip()
    hints = (
        (r'does not exist', 'check the database name (db / db_url) or create the database first'),
        (r'password authentication failed|no password supplied',
         'check login_user / login_password (or the credentials in db_url)'),
        (r'Connection refused|could not translate host name|timeout expired|No route to host',
         'check login_host / login_port and that the server is running and reachable'),
        (r'no pg_hba.conf entry', 'allow this client in pg_hba.conf or connect with ssl_mode=require'),
    )
    for pattern, hint in hints:
        if re.search(pattern, text):
            return '%s (%s)' % (text, hint)
    return text


@contextlib.contextmanager
def transaction(connection):
    """One explicit transaction on an autocommit connection: commit on success, roll back on any error."""
    connection.autocommit = False
    try:
        yield connection
        connection.commit()
    except BaseException:
        if not connection.closed:
            connection.rollback()
        raise
    finally:
        if not connection.closed:
            connection.autocommit = True


def server_version(connection):
    """Server version as (major, minor), e.g. (15, 18)."""
    num = connection.server_version
    if num >= 100000:
        return num // 10000, num % 10000
    return num // 10000, (num // 100) % 100


def quote_ident(connection, name):
    return psycopg2.extensions.quote_ident(name, connection)


def qualified(connection, schema, table):
    return '%s.%s' % (quote_ident(connection, schema), quote_ident(connection, table))


def query_all(connection, sql, args=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()


def execute(connection, sql, args=None):
    """Run a statement that returns no rows; return its row count."""
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.rowcount


def database_exists(connection, dbname):
    return bool(query_all(connection, 'SELECT 1 FROM pg_database WHERE datname = %s', (dbname,)))


def user_tables(connection):
    """Ordinary (leaf) tables outside the system schemas, as (schema, table) pairs."""
    return [tuple(row) for row in query_all(connection, """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
        ORDER BY 1, 2""")]


def row_counts(connection, tables):
    """Exact row counts {'schema.table': n} for the given (schema, table) pairs."""
    counts = {}
    for schema, table in tables:
        rows = query_all(connection, 'SELECT count(*) FROM %s' % qualified(connection, schema, table))
        counts['%s.%s' % (schema, table)] = rows[0][0]
    return counts


def other_sessions(connection, dbname):
    """Sessions other than ours connected to dbname."""
    rows = query_all(connection, """
        SELECT pid, usename, coalesce(application_name, ''), coalesce(host(client_addr), 'local'), coalesce(state, '')
        FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()""", (dbname,))
    return [dict(pid=r[0], user=r[1], application_name=r[2], client=r[3], state=r[4]) for r in rows]


def terminate_sessions(connection, dbname):
    rows = query_all(connection, """
        SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = %s AND pid <> pg_backend_pid()""", (dbname,))
    return [r[0] for r in rows if r[1]]
