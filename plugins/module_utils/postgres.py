# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection helpers shared by the runbook.deploy modules.

One place turns the module options (login_* options or a ``postgres://`` URL) into connection
parameters, opens psycopg2 connections, and builds the libpq environment for pg_dump, pg_restore
and psql.  Passwords travel in ``PGPASSWORD`` in the environment of the one child process that needs
it, never on a command line and never in a file (a killed module cannot leave it behind).  A database
name is always a name: tools get it in ``PGDATABASE`` (never expanded as a connection string) or as a
quoted ``dbname='...'`` connection string (``dbname_conninfo``), never as a bare ``--dbname=<name>``.
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


# Query parameters of a Prisma PostgreSQL URL that only Prisma reads; they do not change where we connect, so a
# DATABASE_URL as a Prisma app carries it (?schema=app&connection_limit=5) is accepted and they are left out.
PRISMA_ONLY_URL_PARAMS = ('schema', 'connection_limit', 'pool_timeout', 'pgbouncer', 'statement_cache_size',
                          'socket_timeout', 'max_connection_lifetime', 'max_idle_connection_lifetime')
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
        if key in PRISMA_ONLY_URL_PARAMS:
            continue
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


def passfile_host(conn):
    """The host field libpq compares passfile lines with: 'localhost' for the local socket."""
    host = conn.get('host')
    if not host or host.startswith('/') or host.startswith('@'):
        return 'localhost'
    return host


def write_passfile(conn, directory, databases=None):
    """Write a libpq passfile (0600) into directory; return its path or None.

    One line per database (default: conn's), each for conn's host, port and user only, so a connection
    anywhere else never gets the password.  pg_backup no longer writes one (see libpq_environment).
    """
    if conn.get('password') in (None, ''):
        return None
    path = os.path.join(directory, 'pgpass')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        for dbname in databases or [conn['dbname']]:
            handle.write('%s:%s:%s:%s:%s\n' % tuple(_escape_passfile(v) for v in (
                passfile_host(conn), conn['port'], dbname, conn['user'], conn['password'])))
    return path


def libpq_environment(conn, passfile=None, dbname=None):
    """Environment variables that point a libpq tool at conn and the database dbname (default conn's).

    The password is in PGPASSWORD: this dict goes into the environment of that one child process only, so
    nothing holding it is ever written to disk.  PGDATABASE is taken as a database name, never expanded as a
    connection string.
    """
    env = {
        'PGPORT': str(conn['port']),
        'PGUSER': conn['user'],
        'PGDATABASE': dbname or conn['dbname'],
        'PGCONNECT_TIMEOUT': str(conn.get('connect_timeout') or 10),
        'PGAPPNAME': 'runbook.deploy',
        'PGPASSWORD': '' if passfile else (conn.get('password') or ''),
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


def dbname_conninfo(dbname):
    """A connection string that names the database dbname and nothing else, for a tool's ``--dbname``.

    libpq expands a ``--dbname`` value holding ``=`` (or starting with ``postgres://``) as a connection string,
    so a database named ``host=evil dbname=x`` would connect elsewhere; quoted as a value it is only a name.
    """
    return "dbname='%s'" % dbname.replace('\\', '\\\\').replace("'", "\\'")


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


def dumpable_objects(connection):
    """How many objects of the connected database pg_dump would write: schemas other than public, relations,
    functions, enum/domain/range types outside the system schemas, extensions other than plpgsql. Zero for a
    database that was only created (pg_dump's archive of it has an empty table of contents)."""
    system = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'")
    return query_all(connection, """
        SELECT (SELECT count(*) FROM pg_namespace n WHERE n.nspname <> 'public' AND {system})
             + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {system})
             + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {system})
             + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {system})
             + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')""".format(system=system))[0][0]


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

    # Only what differs from what CREATE DATABASE ... TEMPLATE template0 gives anyway: each clause can need a
    # privilege of its own (TABLESPACE pg_default needs CREATE on it, OWNER membership in that role), which a
    # least-privilege owner with CREATEDB does not have (and does not need for the defaults).
    default = database_properties(connection, 'template0') or {}
    current = query_all(connection, 'SELECT current_user')[0][0]
    create = ['CREATE DATABASE %s WITH TEMPLATE template0' % q(target)]
    if props['owner'] != current:
        create.append('OWNER %s' % q(props['owner']))
    if props['encoding_name'] != default.get('encoding_name'):
        create.append('ENCODING %s' % lit(props['encoding_name']))
    for column, clause in (('datcollate', 'LC_COLLATE'), ('datctype', 'LC_CTYPE')):
        if props[column] != default.get(column):
            create.append('%s %s' % (clause, lit(props[column])))
    if props['tablespace'] != default.get('tablespace', 'pg_default'):
        create.append('TABLESPACE %s' % q(props['tablespace']))
    if props['datconnlimit'] != -1:
        create.append('CONNECTION LIMIT %d' % props['datconnlimit'])
    provider = props.get('datlocprovider')
    icu = props.get('daticulocale') or props.get('datlocale')
    same_locale = provider == default.get('datlocprovider') and icu == (
        default.get('daticulocale') or default.get('datlocale'))
    if provider == 'i' and not same_locale:
        create.append('LOCALE_PROVIDER icu')
        if icu:
            create.append('ICU_LOCALE %s' % lit(icu))
    elif provider == 'b' and not same_locale:
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


def missing_restore_privileges(connection, target, exists):
    """What the connected user lacks for a clean restore of target (a new database swapped in by rename), as
    phrases ready for a message; [] when nothing is missing.  Checked before anything changes.

    Needed: CREATEDB; for an existing target, the privileges of its owner role (rename it, comment on it,
    grant on it) and membership in it when it is another role (CREATE DATABASE ... OWNER), CREATE on its
    tablespace when that is not the default, and CREATEROLE when other roles have settings in it.
    """
    rows = query_all(connection, 'SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles '
                                 'WHERE rolname = current_user')
    user, superuser, createdb, createrole = rows[0]
    if superuser:
        return []
    missing = []
    if not createdb:
        missing.append("the CREATEDB privilege (ALTER ROLE %s CREATEDB)" % quote_ident(connection, user))
    if not exists:
        return missing
    props = database_properties(connection, target)
    owner = props['owner']
    if owner != user and not query_all(connection, "SELECT pg_has_role(%s, 'MEMBER')", (owner,))[0][0]:
        missing.append("membership in the owner role %s of database '%s' (GRANT %s TO %s)"
                       % (owner, target, quote_ident(connection, owner), quote_ident(connection, user)))
    default = database_properties(connection, 'template0') or {}
    if props['tablespace'] != default.get('tablespace', 'pg_default') and not query_all(
            connection, "SELECT has_tablespace_privilege(%s, 'CREATE')", (props['tablespace'],))[0][0]:
        missing.append('CREATE on tablespace %s (GRANT CREATE ON TABLESPACE %s TO %s)'
                       % (props['tablespace'], quote_ident(connection, props['tablespace']), quote_ident(connection, user)))
    others = query_all(connection, """
        SELECT DISTINCT r.rolname FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
        JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = %s AND r.rolname <> current_user""", (target,))
    if others and not createrole:
        missing.append('the CREATEROLE privilege, to copy the settings roles %s have in it (ALTER ROLE ... IN '
                       'DATABASE ... SET)' % ', '.join(r[0] for r in others))
    return missing


# pg_dump/pg_restore --jobs above this is never useful and only exhausts connection slots.
MAX_JOBS = 64


def free_connections(connection, dbname=None):
    """How many more connections the connected user can open to dbname (default: the current database) right
    now, within the server's max_connections (less the slots reserved for superusers, which a non-superuser
    cannot use), the role's and the database's CONNECTION LIMIT (which do not apply to superusers).

    Of the server's slots, server_headroom() stay free for the applications.  Returns (free, detail): detail
    names the binding limit for a message.  This connection is counted as used: the caller closes it before the
    tools start, which leaves one spare.
    """
    row = query_all(connection, """
        SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
               r.rolsuper, r.rolconnlimit,
               (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND backend_type = 'client backend'),
               d.datconnlimit,
               (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND backend_type = 'client backend')
        FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = coalesce(%s, current_database())
    """, (dbname,))[0]
    max_conn, reserved, used, superuser, role_limit, role_used, db_limit, db_used = row
    headroom = server_headroom(max_conn)
    limits = [(max_conn - (0 if superuser else reserved) - used - headroom,
               'the free connection slots of the server (max_connections %d, %d reserved for superusers, %d in use, '
               '%d left for others)' % (max_conn, reserved, used, headroom))]
    if not superuser and role_limit >= 0:
        limits.append((role_limit - role_used, 'the CONNECTION LIMIT %d of the role (%d in use)' % (role_limit, role_used)))
    if not superuser and db_limit >= 0:
        limits.append((db_limit - db_used, 'the CONNECTION LIMIT %d of the database (%d in use)' % (db_limit, db_used)))
    return min(limits)


def server_headroom(max_connections):
    """Server slots a backup leaves free for the applications: a tenth of max_connections, at least 3."""
    return max(3, max_connections // 10)


def bound_jobs(requested, free, extra=1):
    """The --jobs value to use: requested, reduced so the tools' connections (jobs + extra: pg_dump's leader,
    our own snapshot connection) fit in free, never below 1 nor above MAX_JOBS."""
    return max(1, min(requested, MAX_JOBS, free - extra))


# Runbook 002's "Database Health" (connections, long-running queries) and the lock waits that hang a migration, as
# numbers a threshold compares. The connection counts come from pg_stat_database, which every user sees whole; the
# states and times come from pg_stat_activity, where a user that is neither superuser nor a member of
# pg_read_all_stats (pg_monitor) sees only its own role's sessions: `sees_all_sessions` says which view this is.
# A lock wait is timed from pg_locks.waitstart (PostgreSQL 14 and later; before, from the waiting query's start),
# advisory locks left out (Prisma's migration lock is one, and waiting on it is its purpose).
HEALTH_SQL = """
    SELECT current_setting('max_connections')::int AS max_connections,
           (SELECT sum(numbackends) FROM pg_stat_database)::int AS connections,
           (SELECT numbackends FROM pg_stat_database WHERE datname = current_database()) AS database_connections,
           count(*) FILTER (WHERE state = 'active') AS active,
           count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_in_transaction,
           count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event <> 'advisory') AS waiting_on_locks,
           coalesce(max(extract(epoch FROM now() - query_start)) FILTER (WHERE state = 'active'), 0) AS longest_query_s,
           coalesce(max(extract(epoch FROM now() - state_change))
                    FILTER (WHERE state LIKE 'idle in transaction%'), 0) AS longest_idle_in_transaction_s,
           {lock_wait} AS longest_lock_wait_s,
           (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
             OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all_sessions
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND (backend_type = 'client backend' OR backend_type IS NULL)
"""
LOCK_WAIT_SINCE_WAITSTART = """coalesce((SELECT max(extract(epoch FROM now() - l.waitstart)) FROM pg_locks l
                     WHERE NOT l.granted AND l.locktype <> 'advisory'
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())), 0)"""
LOCK_WAIT_SINCE_QUERY_START = """coalesce(max(extract(epoch FROM now() - query_start))
                    FILTER (WHERE wait_event_type = 'Lock' AND wait_event <> 'advisory'), 0)"""


def health(connection):
    """The database's health as numbers: connections (the server's, with max_connections and the share used, and
    this database's), this database's sessions by state, and the longest running query, idle transaction and lock
    wait in seconds. This session is not counted. Read in the caller's transaction."""
    lock_wait = LOCK_WAIT_SINCE_WAITSTART if connection.server_version >= 140000 else LOCK_WAIT_SINCE_QUERY_START
    cursor = connection.cursor()
    try:
        cursor.execute(HEALTH_SQL.format(lock_wait=lock_wait))
        names = [column[0] for column in cursor.description]
        row = dict(zip(names, cursor.fetchone()))
    finally:
        cursor.close()
    page = dict((name, float(value) if name.endswith('_s') else value) for name, value in row.items())
    # This connection is one of the server's and of the database's: what the others use.
    page['connections'] = max(0, (page['connections'] or 0) - 1)
    page['database_connections'] = max(0, (page['database_connections'] or 0) - 1)
    page['connections_used'] = round(page['connections'] / float(page['max_connections']), 4)
    # A number, as every key of the page: a threshold compares numbers (1 = sees every session's state).
    page['sees_all_sessions'] = 1 if page['sees_all_sessions'] else 0
    for name in ('longest_query_s', 'longest_idle_in_transaction_s', 'longest_lock_wait_s'):
        page[name] = round(page[name], 1)
    return page
