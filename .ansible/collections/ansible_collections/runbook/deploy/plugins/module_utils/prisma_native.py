# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The native engine of runbook.deploy.prisma_migrate: Prisma Migrate's bookkeeping in Python (psycopg2).

It applies and resolves migrations the way Prisma's schema engine does on PostgreSQL, so that the real
Prisma CLI and this engine can take turns on one database (prisma-engines, ``schema-engine/core/src/commands``
``apply_migrations.rs`` and ``mark_migration_applied.rs``, ``schema-connector`` ``checksum.rs`` and
``migration_persistence.rs``, the PostgreSQL flavour in ``sql-schema-connector``):

- one connection, ``search_path`` set to the schema, the schema created when it does not exist;
- ``pg_advisory_lock(72707369)`` held for the whole run, so it never runs beside ``prisma migrate deploy``;
- ``_prisma_migrations`` created with Prisma's DDL, only in a schema without tables (else P3005);
- refusal while a migration is failed (P3009, with Prisma's details text);
- per pending migration, in the folders' order: a row (uuid4 id, sha256 checksum of ``migration.sql``,
  ``started_at`` now), the whole script sent as one simple query (so ``DO $$ ... $$`` and function bodies
  work, and a script without its own transaction control runs in one implicit transaction), then
  ``applied_steps_count + 1`` and ``finished_at`` now; on failure the row keeps ``finished_at`` NULL and
  ``logs`` holds the P3018 message with the database error, and the run stops;
- ``resolve --applied``: P3008 when a row of the migration is finished, failed rows get ``rolled_back_at``, then a
  row with ``started_at = finished_at`` and empty ``logs``; ``resolve --rolled-back``: P3011 / P3012, failed
  rows get ``rolled_back_at``.

The engine prints what ``prisma migrate deploy`` prints (the applied list, ``All migrations have been
successfully applied.``, ``Error: P30xx``), so the module judges both engines' runs the same way.
"""

from __future__ import annotations

import datetime
import os
import re
import time
import uuid

from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils import prisma

CREATE_MIGRATIONS_TABLE = '''CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);
'''
# Tables Prisma does not count when it decides whether a schema is empty (PostGIS's).
IGNORED_TABLES = ('spatial_ref_sys',)
RESOLVE_DOCS = 'https://pris.ly/d/migrate-resolve'
P3005_MESSAGE = ('The database schema is not empty. Read more about how to baseline an existing production database: '
                 'https://pris.ly/d/migrate-baseline')
P3009_MESSAGE = ('migrate found failed migrations in the target database, new migrations will not be applied. Read '
                 'more about how to resolve migration issues in a production database: %s\n%s')
P3018_MESSAGE = ('A migration failed to apply. New migrations cannot be applied before the error is recovered from. '
                 'Read more about how to resolve migration issues in a production database: %s\n\nMigration name: '
                 '%s\n\nDatabase error code: %s\n\nDatabase error:\n%s\n')
PROVIDER = re.compile(r'^\s*provider\s*=\s*"([^"]*)"', re.M)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def script_lines(script):
    """Rust's str::lines(): split on \\n, drop one trailing \\r per line, no empty last line."""
    lines = script.split('\n')
    if lines and lines[-1] == '':
        lines.pop()
    return [line[:-1] if line.endswith('\r') else line for line in lines]


def error_position(script, position):
    """The 'Position:' block Prisma's engine adds to a failed migration's error (5 lines before, bold/red)."""
    previous = [''] * 5
    byte_index = 0
    for index, line in enumerate(script_lines(script)):
        line_number = index + 1
        byte_index += len(line.encode('utf-8')) + 1
        if position <= byte_index:
            numbered = []
            for slot, text in enumerate(previous):
                number = line_number - (len(previous) - slot)
                if number >= 0:
                    numbered.append('\x1b[1m%3d\x1b[0m%s%s' % (number, '' if text == '' else ' ', text))
            return '\n\nPosition:\n%s\n\x1b[1m%3d\x1b[1;31m %s\x1b[0m' % ('\n'.join(numbered), line_number, line)
        previous = previous[1:] + [line]
    return ''


def _rust_option(value, quote=True):
    if value is None:
        return 'None'
    if quote:
        return 'Some(%s)' % rust_string(value)
    return 'Some(%s)' % value


def rust_string(value):
    return '"%s"' % str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def database_error(exc, script):
    """(SQLSTATE, text) for a failed script, in the shape of tokio-postgres' DbError Display + Debug."""
    diag = getattr(exc, 'diag', None)
    code = getattr(exc, 'pgcode', None)
    if diag is None or not code:
        return 'none', ' '.join(str(exc).split())
    severity = diag.severity or 'ERROR'
    text = '%s: %s' % (severity, diag.message_primary or '')
    if diag.message_detail:
        text += '\nDETAIL: %s' % diag.message_detail
    if diag.message_hint:
        text += '\nHINT: %s' % diag.message_hint
    position = None
    if diag.statement_position:
        try:
            position = int(diag.statement_position)
        except ValueError:
            position = None
    block = error_position(script, position) if position else ''
    parsed = (diag.severity_nonlocalized or severity).capitalize()
    debug = ('DbError { severity: %s, parsed_severity: Some(%s), code: SqlState(E%s), message: %s, detail: %s, '
             'hint: %s, position: %s, where_: %s, schema: %s, table: %s, column: %s, datatype: %s, constraint: %s, '
             'file: %s, line: %s, routine: %s }' % (
                 rust_string(severity), parsed, code, rust_string(diag.message_primary or ''),
                 _rust_option(diag.message_detail), _rust_option(diag.message_hint),
                 _rust_option('Original(%d)' % position if position else None, quote=False),
                 _rust_option(diag.context), _rust_option(diag.schema_name), _rust_option(diag.table_name),
                 _rust_option(diag.column_name), _rust_option(diag.datatype_name), _rust_option(diag.constraint_name),
                 _rust_option(diag.source_file), _rust_option(diag.source_line, quote=False),
                 _rust_option(diag.source_function)))
    return code, '%s%s\n\n%s' % (text, block, debug)


def failed_logs(name, code, error_text):
    """What Prisma writes to _prisma_migrations.logs for a failed migration: the P3018 message, then where."""
    message = P3018_MESSAGE % (RESOLVE_DOCS, name, code, error_text)
    trace = ('   0: runbook.deploy.prisma_migrate::native::apply_script\n'
             '           with migration_name=%s' % rust_string(name))
    return '%s\n%s' % (message, trace)


class NativeError(prisma.PrismaError):
    """A Prisma error the native engine raises itself (code, message), printed like the CLI's."""

    def __init__(self, code, message, migration=None, database_message=None):
        super(NativeError, self).__init__('%s: %s' % (code, message), code=code, migration=migration,
                                          database_message=database_message)
        self.code = code
        self.text = message


class PrismaNative(prisma.PrismaEngine):
    """Engine C(native): Prisma Migrate's deploy and resolve, done with psycopg2 (no Node.js, no Prisma CLI)."""

    name = 'native'
    label = 'native migrate deploy'

    def __init__(self, conn, db_schema, migrations_path, timeout=None, allow_empty=False):
        self.conn = conn
        self.db_schema = db_schema
        self.migrations_path = migrations_path
        self.allow_empty = allow_empty
        self.timeout = timeout
        self.version = None

    def check(self):
        """P3019 when migration_lock.toml names another provider (error_on_changed_provider); nothing else to find:
        psycopg2 is checked by the module, the folder when it is read. The module calls this before deploy or
        resolve, like PrismaCli.check()."""
        lock_file = os.path.join(self.migrations_path, 'migration_lock.toml')
        if not os.path.isfile(lock_file):
            return
        with open(lock_file, 'rb') as handle:
            match = PROVIDER.search(handle.read().decode('utf-8', 'replace'))
        if match and match.group(1) != 'postgresql':
            raise NativeError('P3019', 'The datasource provider `postgresql` specified in your schema does not match '
                                       'the one specified in the migration_lock.toml, `%s`.' % match.group(1))

    # -- the connection ------------------------------------------------------------------------
    def connect(self):
        connection = pg.connect(self.conn)
        schema_exists = pg.query_all(connection, 'SELECT EXISTS(SELECT 1 FROM pg_namespace WHERE nspname = %s)',
                                     (self.db_schema,))[0][0]
        if not schema_exists:
            pg.execute(connection, 'CREATE SCHEMA %s' % pg.quote_ident(connection, self.db_schema))
        pg.execute(connection, 'SET search_path = %s' % pg.quote_ident(connection, self.db_schema))
        return connection

    def table(self, connection):
        return pg.qualified(connection, self.db_schema, prisma.MIGRATIONS_TABLE)

    def initialize(self, connection):
        """Create _prisma_migrations in an empty schema; P3005 when the schema has tables but no table."""
        if prisma.read_rows(connection, self.db_schema) is not None:
            return
        found = pg.query_all(connection, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                         "WHERE c.relkind IN ('r', 'p') AND n.nspname = %s ORDER BY 1", (self.db_schema,))
        tables = [row[0] for row in found if row[0] not in IGNORED_TABLES]
        if tables:
            raise NativeError('P3005', P3005_MESSAGE)
        pg.execute(connection, CREATE_MIGRATIONS_TABLE)

    def lock(self, connection):
        return prisma.MigrationLock(connection, self.timeout)

    # -- deploy --------------------------------------------------------------------------------
    def deploy(self):
        """Apply the pending migrations; return (rc, output, seconds) with the CLI's words."""
        started = time.time()
        lines = []
        try:
            applied = self.apply_pending(lines)
        except NativeError as exc:
            return 1, '\n'.join(lines + ['Error: %s' % exc.code, '', exc.text]), round(time.time() - started, 3)
        if applied:
            lines.append('')
            lines.append('The following migration(s) have been applied:')
            lines.append('')
            lines.append('migrations/')
            for name in applied:
                lines.append('  \u2514\u2500 %s/' % name)
                lines.append('    \u2514\u2500 %s' % prisma.MIGRATION_FILE)
            lines.append('')
            lines.append('All migrations have been successfully applied.')
        else:
            lines.append('No pending migrations to apply.')
        return 0, '\n'.join(lines), round(time.time() - started, 3)

    def apply_pending(self, lines):
        local = prisma.local_migrations(self.migrations_path, allow_empty=self.allow_empty)
        lines.append('%d migration%s found in %s' % (len(local), '' if len(local) == 1 else 's',
                                                     self.migrations_path))
        connection = self.connect()
        try:
            with self.lock(connection):
                self.initialize(connection)
                rows = prisma.read_rows(connection, self.db_schema) or []
                self.refuse_failed(rows)
                live = set(r['migration_name'] for r in rows if r['rolled_back_at'] is None)
                applied = []
                for migration in local:
                    if migration['name'] in live:
                        continue
                    self.apply_one(connection, migration)
                    applied.append(migration['name'])
                return applied
        finally:
            connection.close()

    def refuse_failed(self, rows):
        failed = [r for r in rows if r['finished_at'] is None and r['rolled_back_at'] is None]
        if not failed:
            return
        details = ''
        for row in failed:
            logs = (row['logs'] or '').strip()
            details += 'The `%s` migration started at %s failed%s\n' % (
                row['migration_name'], row['started_at'], (' with the following logs:\n%s' % logs) if logs else '')
        raise NativeError('P3009', P3009_MESSAGE % (RESOLVE_DOCS, details), migration=failed[0]['migration_name'],
                          database_message=prisma.database_message(failed[0]['logs']))

    def apply_one(self, connection, migration):
        name = migration['name']
        script_path = os.path.join(migration['path'], prisma.MIGRATION_FILE)
        try:
            with open(script_path, 'rb') as handle:
                script = handle.read().decode('utf-8')
        except (IOError, OSError):
            raise NativeError('P3015', 'Could not find the migration file at %s. Please delete the directory or '
                                       'restore the migration file.' % script_path, migration=name)
        except UnicodeDecodeError as exc:
            raise NativeError('P3015', 'The migration file %s is not valid UTF-8 (%s); Prisma reads migration '
                                       'scripts as UTF-8 text' % (script_path, exc), migration=name)
        table = self.table(connection)
        row_id = str(uuid.uuid4())
        insert = 'INSERT INTO %s (id, checksum, started_at, migration_name) VALUES (%%s, %%s, %%s, %%s)' % table
        pg.execute(connection, insert, (row_id, prisma.checksum(script.encode('utf-8')), now(), name))
        try:
            with connection.cursor() as cursor:
                cursor.execute(script)  # one simple query, as the engine's simple_query(): no parameters, no split
        except pg.psycopg2.Error as exc:
            if connection.closed:
                raise NativeError('P1017', 'Server has closed the connection while migration %s ran: %s'
                                  % (name, prisma.pg_message(exc)), migration=name)
            connection.rollback()  # a no-op in autocommit, unless the script left a transaction open
            code, text = database_error(exc, script)
            logs = failed_logs(name, code, text)
            pg.execute(connection, 'UPDATE %s SET logs = %%s WHERE id = %%s' % table, (logs, row_id))
            raise NativeError('P3018', P3018_MESSAGE % (RESOLVE_DOCS, name, code, text), migration=name,
                              database_message=prisma.database_message(logs))
        if connection.get_transaction_status() != pg.psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            connection.rollback()  # a script that opened a transaction and did not end it: nothing of it stays
            logs = failed_logs(name, 'none', 'the migration script left a transaction open (BEGIN without COMMIT); '
                                             'it was rolled back')
            pg.execute(connection, 'UPDATE %s SET logs = %%s WHERE id = %%s' % table, (logs, row_id))
            raise NativeError('P3018', 'migration %s left a transaction open (BEGIN without COMMIT); it was rolled '
                                       'back' % name, migration=name)
        step = 'UPDATE %s SET applied_steps_count = applied_steps_count + 1 WHERE id = %%s' % table
        pg.execute(connection, step, (row_id,))
        pg.execute(connection, 'UPDATE %s SET finished_at = %%s WHERE id = %%s' % table, (now(), row_id))

    # -- resolve -------------------------------------------------------------------------------
    def rows_of(self, connection, name):
        return [r for r in (prisma.read_rows(connection, self.db_schema) or []) if r['migration_name'] == name]

    def resolve_applied(self, name):
        """prisma migrate resolve --applied: P3017 / P3008, failed rows rolled back, an applied row added."""
        script_path = os.path.join(self.migrations_path, name, prisma.MIGRATION_FILE)
        if not os.path.isfile(script_path):
            raise NativeError('P3017', 'The migration %s could not be found. Please make sure that the migration '
                                       'exists, and that you included the whole name of the directory.' % name,
                              migration=name)
        with open(script_path, 'rb') as handle:
            checksum = prisma.checksum(handle.read())
        connection = self.connect()
        try:
            with self.lock(connection):
                if prisma.read_rows(connection, self.db_schema) is None:
                    pg.execute(connection, CREATE_MIGRATIONS_TABLE)  # baseline_initialize: no emptiness check
                rows = self.rows_of(connection, name)
                if any(r['finished_at'] is not None for r in rows):
                    raise NativeError('P3008', 'The migration `%s` is already recorded as applied in the database.'
                                      % name, migration=name)
                table = self.table(connection)
                stamp = now()
                with pg.transaction(connection), connection.cursor() as cursor:
                    for row in rows:
                        if row['finished_at'] is None and row['rolled_back_at'] is None:
                            cursor.execute('UPDATE %s SET rolled_back_at = %%s WHERE id = %%s' % table,
                                           (stamp, row['id']))
                    cursor.execute("INSERT INTO %s (id, checksum, logs, started_at, finished_at, migration_name) "
                                   "VALUES (%%s, %%s, '', %%s, %%s, %%s)" % table,
                                   (str(uuid.uuid4()), checksum, stamp, stamp, name))
        finally:
            connection.close()
        return 'native'

    def resolve_rolled_back(self, name):
        """prisma migrate resolve --rolled-back: P3011 / P3012, then rolled_back_at on the failed rows."""
        connection = self.connect()
        try:
            with self.lock(connection):
                rows = self.rows_of(connection, name)
                if not rows:
                    raise NativeError('P3011', 'Migration `%s` cannot be rolled back because it was never applied '
                                               'to the database.' % name, migration=name)
                failed = [r for r in rows if r['finished_at'] is None and r['rolled_back_at'] is None]
                if not failed:
                    raise NativeError('P3012', 'Migration `%s` cannot be rolled back because it is not in a failed '
                                               'state.' % name, migration=name)
                table = self.table(connection)
                stamp = now()
                with pg.transaction(connection), connection.cursor() as cursor:
                    for row in failed:
                        cursor.execute('UPDATE %s SET rolled_back_at = %%s WHERE id = %%s' % table, (stamp, row['id']))
        finally:
            connection.close()
        return 'native'
