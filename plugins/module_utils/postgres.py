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


# GUCs whose stored value is already a list in SQL syntax (pg_dumpall's variable_is_guc_list_quote()).
_LIST_GUCS = ('local_preload_libraries', 'search_path', 'session_preload_libraries', 'shared_preload_libraries',
              'temp_tablespaces', 'unix_socket_directories')


def literal(connection, value):
    """value as an SQL literal for this connection."""
    with connection.cursor() as cursor:
        return cursor.mogrify('%s', (value,)).decode('utf-8')


def database_properties(connection, dbname):
    """pg_database's row for dbname as a dict (columns differ between server versions), plus owner and
    tablespace names; None when it does not exist."""
    rows = query_all(connection, """
        SELECT to_jsonb(d), pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), t.spcname,
               shobj_description(d.oid, 'pg_database')
        FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s""", (dbname,))
    if not rows:
        return None
    props = dict(rows[0][0])
    props.update(owner=rows[0][1], encoding_name=rows[0][2], tablespace=rows[0][3], comment=rows[0][4])
    return props


def clone_database_sql(connection, source, target):
    """(CREATE DATABASE statement, [statements to run after it]) that make ``target`` an empty database like
    ``source``: owner, encoding, collation and ctype (locale provider and ICU locale where the server has
    them), tablespace, connection limit, per-database settings (ALTER DATABASE / ALTER ROLE ... IN DATABASE
    ... SET), database privileges and comment."""
    props = database_properties(connection, source)
    if props is None:
        raise PostgresError("database '%s' does not exist" % source)

    def q(name):
        return quote_ident(connection, name)

    def lit(value):
        return literal(connection, value)

    create = ['CREATE DATABASE %s WITH TEMPLATE template0' % q(target), 'OWNER %s' % q(props['owner']),
              'ENCODING %s' % lit(props['encoding_name']), 'LC_COLLATE %s' % lit(props['datcollate']),
              'LC_CTYPE %s' % lit(props['datctype']), 'TABLESPACE %s' % q(props['tablespace']),
              'CONNECTION LIMIT %d' % props['datconnlimit']]
    provider = props.get('datlocprovider')
    if provider == 'i':
        create.append('LOCALE_PROVIDER icu')
        icu = props.get('daticulocale') or props.get('datlocale')
        if icu:
            create.append('ICU_LOCALE %s' % lit(icu))
    elif provider == 'b':
        create.append('LOCALE_PROVIDER builtin')
        if props.get('datlocale'):
            create.append('BUILTIN_LOCALE %s' % lit(props['datlocale']))
    after = []
    for role, config in query_all(connection, """
            SELECT r.rolname, s.setconfig FROM pg_db_role_setting s
            JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole
            WHERE d.datname = %s ORDER BY 1 NULLS FIRST""", (source,)):
        for item in config or []:
            name, dummy, value = item.partition('=')
            value = value if name.lower() in _LIST_GUCS else lit(value)
            if role:
                after.append('ALTER ROLE %s IN DATABASE %s SET %s = %s' % (q(role), q(target), q(name), value))
            else:
                after.append('ALTER DATABASE %s SET %s = %s' % (q(target), q(name), value))
    if props.get('datacl') is not None:
        after.append('REVOKE ALL ON DATABASE %s FROM PUBLIC' % q(target))
        grants = query_all(connection, """
            SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,
                   a.is_grantable
            FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s AND a.grantee <> d.datdba""", (source,))
        for grantee, privilege, grantable in grants:
            after.append('GRANT %s ON DATABASE %s TO %s%s' % (
                privilege, q(target), q(grantee) if grantee else 'PUBLIC', ' WITH GRANT OPTION' if grantable else ''))
    if props.get('comment'):
        after.append('COMMENT ON DATABASE %s IS %s' % (q(target), lit(props['comment'])))
    return ' '.join(create), after


def rename_databases(connection, renames):
    """Rename databases [(old, new), ...] in one transaction: all of them or none."""
    with transaction(connection):
        with connection.cursor() as cursor:
            for old, new in renames:
                cursor.execute('ALTER DATABASE %s RENAME TO %s' % (quote_ident(connection, old), quote_ident(connection, new)))


def drop_database(connection, dbname, force=False):
    with connection.cursor() as cursor:
        cursor.execute('DROP DATABASE IF EXISTS %s%s' % (quote_ident(connection, dbname), ' WITH (FORCE)' if force else ''))
