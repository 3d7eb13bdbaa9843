# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prisma Migrate helpers for runbook.deploy.prisma_migrate.

The state of a Prisma project's database is read from two places, never from the CLI's human text alone:
the migrations folder (``<name>/migration.sql``, the order is the folder names' order) and the
``_prisma_migrations`` table.  A migration is

- applied when one of its rows has ``finished_at`` set and ``rolled_back_at`` NULL,
- failed when one of its rows has both NULL (``migrate deploy`` refuses to run while one exists, P3009),
- pending otherwise (no row, or only rows with ``rolled_back_at`` set: ``migrate deploy`` applies it again).

``PrismaCli`` drives the project's own Prisma CLI (deploy and resolve).  It is one engine; the module talks
to it through ``deploy()``, ``resolve_applied()`` and ``resolve_rolled_back()`` so that another engine can
be added beside it.  ``DownRunner`` is the down path, which Prisma does not have: each down script runs in
one transaction with psycopg2, which also marks the migration rolled back, under Prisma's advisory lock.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import time

try:
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    pass

from ansible_collections.runbook.deploy.plugins.module_utils import down_migrations as down
from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils.command import PrivateWorkspace, describe_rc, find_tool

MIGRATIONS_TABLE = '_prisma_migrations'
# The key Prisma's schema engine passes to pg_advisory_lock() while it migrates (sql-schema-connector).
ADVISORY_LOCK_KEY = 72707369
MIGRATION_FILE = 'migration.sql'
DOWN_FILE = 'down.sql'
# Query parameters of a Prisma PostgreSQL URL that only Prisma reads (defined with the URL parser).
PRISMA_ONLY_URL_PARAMS = pg.PRISMA_ONLY_URL_PARAMS
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
APPLIED_LINE = 'The following migration(s) have been applied'
SUCCESS_LINES = ('All migrations have been successfully applied.', 'No pending migrations to apply.')
ENGINE_MISSING = re.compile(r'Could not find schema-engine binary|schema-engine.*(?:not found|ENOENT)', re.I)
TRACE_LINE = re.compile(r'^\s*\d+: |^\s+(?:at|with) ')


class PrismaError(Exception):
    """A prisma_migrate step failed; the message is ready for fail_json, ``details`` for the result."""

    def __init__(self, message, code=None, migration=None, database_message=None, output=None):
        super(PrismaError, self).__init__(message)
        self.details = dict(code=code, migration=migration, database_message=database_message)
        if output is not None:
            self.details['output'] = output


# -- the database URL ---------------------------------------------------------------------------
def split_url(url):
    """Split a Prisma URL into (URL psycopg2 can use, {Prisma-only query parameters})."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise PrismaError('db_url is not a valid URL; expected postgresql://user:password@host:port/dbname')
    kept, prisma_only = [], {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in PRISMA_ONLY_URL_PARAMS:
            prisma_only[key] = value
        else:
            kept.append((key, value))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment)), prisma_only


def connection_options(params):
    """(libpq connection keywords, Prisma-only URL parameters) from the module's connection options."""
    params = dict(params)
    prisma_only = {}
    if params.get('db_url'):
        params['db_url'], prisma_only = split_url(params['db_url'])
    return pg.connection_from_params(params), prisma_only


def build_url(conn, prisma_only):
    """The postgresql:// URL handed to Prisma (in its environment only) for conn."""
    auth = quote(str(conn['user']), safe='')
    if conn.get('password') not in (None, ''):
        auth += ':' + quote(str(conn['password']), safe='')
    query = []
    host = conn.get('host') or 'localhost'
    if host.startswith('/'):
        query.append(('host', host))
        host = 'localhost'
    elif ':' in host:
        host = '[%s]' % host
    for key in ('sslmode', 'sslrootcert', 'connect_timeout'):
        if conn.get(key) not in (None, ''):
            query.append((key, str(conn[key])))
    query.extend(sorted(prisma_only.items()))
    netloc = '%s@%s:%s' % (auth, host, conn['port'])
    return urlunsplit(('postgresql', netloc, '/' + quote(conn['dbname'], safe=''), urlencode(query), ''))


# -- the migrations folder ----------------------------------------------------------------------
def checksum(script):
    """_prisma_migrations.checksum of a script (bytes): its sha256, hex (Prisma's render_checksum)."""
    return hashlib.sha256(script).hexdigest()


def script_checksums(script):
    """The checksums Prisma accepts for a script: as it is, with CRLF made LF, and with LF made CRLF.

    (schema-connector checksum.rs, script_matches_checksum: git may change the line endings of a checkout.)
    """
    return (checksum(script), checksum(script.replace(b'\r\n', b'\n')), checksum(script.replace(b'\n', b'\r\n')))


def checksum_matches(checksums, recorded):
    """Whether a recorded checksum matches one of a script's checksums, as Prisma judges it.

    An old schema engine wrote checksums without zero-padding each byte (prisma-engines#1887); Prisma still
    accepts those when the recorded string is not 64 characters long.
    """
    if not recorded:
        return False
    if len(recorded) != 64:
        return any(unpadded(c) == recorded for c in checksums)
    return recorded in checksums


def unpadded(hex_checksum):
    """A checksum as the old schema engine wrote it: each byte in hex without its leading zero."""
    try:
        return ''.join('%x' % byte for byte in bytearray.fromhex(hex_checksum))
    except ValueError:
        return hex_checksum


def local_migrations(directory, allow_empty=False):
    """The migrations in a Prisma migrations folder, in Prisma's order (folder names sorted).

    A missing folder, or one without any ``<name>/migration.sql``, is nearly always a wrong path (the CLI would
    report "No pending migrations to apply."): PrismaError unless allow_empty (a new project without migrations).
    """
    if not os.path.isdir(directory):
        if allow_empty:
            return []
        raise PrismaError('migrations_path: the migrations folder %s does not exist; set migrations_path (or schema) '
                          "to where the project's migrations are, or allow_empty=true for a new project without "
                          'migrations yet' % directory)
    found = []
    for name in sorted(os.listdir(directory)):
        script = os.path.join(directory, name, MIGRATION_FILE)
        if os.path.isfile(script):
            down = os.path.join(directory, name, DOWN_FILE)
            with open(script, 'rb') as handle:
                checksums = script_checksums(handle.read())
            found.append(dict(name=name, path=os.path.join(directory, name), checksum=checksums[0],
                              checksums=checksums, down_script=down if os.path.isfile(down) else None))
    if not found and not allow_empty:
        raise PrismaError('migrations_path: %s has no migrations (no <name>/%s in it), so nothing would ever be '
                          "pending; this is nearly always a wrong path: set migrations_path (or schema) to where the "
                          "project's migrations are, or allow_empty=true for a new project without migrations yet"
                          % (directory, MIGRATION_FILE))
    return found


def default_schema(project_path):
    """Where the Prisma CLI looks for the schema when none is given (package.json, then the defaults)."""
    package = os.path.join(project_path, 'package.json')
    if os.path.isfile(package):
        try:
            with open(package) as handle:
                configured = (json.load(handle).get('prisma') or {}).get('schema')
        except (ValueError, AttributeError):
            configured = None
        if configured:
            return os.path.join(project_path, configured)
    for candidate in ('prisma/schema.prisma', 'schema.prisma', 'prisma/schema'):
        path = os.path.join(project_path, candidate)
        if os.path.exists(path):
            return path
    return None


def default_migrations_path(project_path, schema):
    schema = schema or default_schema(project_path)
    if not schema:
        raise PrismaError('no Prisma schema found in %s (looked for prisma/schema.prisma and schema.prisma); set '
                          'schema or migrations_path' % project_path)
    base = schema if os.path.isdir(schema) else os.path.dirname(schema)
    return os.path.join(base, 'migrations')


# -- the _prisma_migrations table ---------------------------------------------------------------
def iso(value):
    return value.isoformat() if isinstance(value, datetime.datetime) else value


def read_rows(connection_, db_schema):
    """Rows of _prisma_migrations as dicts, oldest first, or None when the table does not exist."""
    rows = pg.query_all(connection_, 'SELECT to_regclass(%s)', ('%s.%s' % (
        pg.quote_ident(connection_, db_schema), MIGRATIONS_TABLE),))
    if rows[0][0] is None:
        return None
    table = pg.qualified(connection_, db_schema, MIGRATIONS_TABLE)
    columns = ('id', 'checksum', 'finished_at', 'migration_name', 'logs', 'rolled_back_at', 'started_at',
               'applied_steps_count')
    rows = pg.query_all(connection_, 'SELECT %s FROM %s ORDER BY started_at, migration_name' % (
        ', '.join(columns), table))
    return [dict(zip(columns, row)) for row in rows]


def database_message(logs):
    """The database's words from a _prisma_migrations.logs text (engine backtrace dropped)."""
    lines = []
    for line in (logs or '').splitlines():
        if TRACE_LINE.match(line) or line.strip() in ('', 'external connector error'):
            continue
        lines.append(line.strip())
    return ' '.join(lines)[:2000] or None


def duration(row):
    if row.get('finished_at') and row.get('started_at'):
        return round((row['finished_at'] - row['started_at']).total_seconds(), 3)
    return None


def classify(local, rows):
    """The status: applied, pending, failed (and drift) from the folder's migrations and the table's rows."""
    table_exists = rows is not None
    rows = rows or []
    by_name = {}
    for row in rows:
        by_name.setdefault(row['migration_name'], []).append(row)
    local_by_name = dict((m['name'], m) for m in local)
    applied, failed = [], []
    for name, name_rows in by_name.items():
        live = [r for r in name_rows if r['rolled_back_at'] is None]
        done = [r for r in live if r['finished_at'] is not None]
        if done:
            row = done[-1]
            entry = dict(name=name, started_at=iso(row['started_at']), finished_at=iso(row['finished_at']),
                         duration=duration(row), applied_steps_count=row['applied_steps_count'],
                         checksum=row['checksum'], in_folder=name in local_by_name)
            entry['checksum_matches'] = (
                checksum_matches(local_by_name[name].get('checksums') or (local_by_name[name]['checksum'],),
                                 row['checksum'])
                if name in local_by_name else None)
            applied.append((row['started_at'], name, entry))
        for row in live:
            if row['finished_at'] is None:
                failed.append(dict(name=name, started_at=iso(row['started_at']), logs=row['logs'],
                                   database_message=database_message(row['logs']),
                                   applied_steps_count=row['applied_steps_count']))
    applied.sort(key=lambda item: (item[0], item[1]))
    applied_entries = [entry for dummy_t, dummy_n, entry in applied]
    applied_names = set(e['name'] for e in applied_entries)
    failed_names = set(f['name'] for f in failed)
    pending = [m['name'] for m in local if m['name'] not in applied_names and m['name'] not in failed_names]
    return dict(
        table_exists=table_exists,
        applied=applied_entries,
        pending=pending,
        failed=failed,
        rolled_back=sorted(n for n, rs in by_name.items() if n not in applied_names and n not in failed_names),
        not_in_folder=[e['name'] for e in applied_entries if not e['in_folder']],
        modified=[e['name'] for e in applied_entries if e['checksum_matches'] is False],
    )


def select_rollback(status, steps=None, migration=None, known=()):
    """The applied migrations to roll back, newest (last applied) first."""
    newest_first = list(reversed(status['applied']))
    if steps is not None:
        if steps < 1:
            raise PrismaError('steps must be 1 or more')
        return newest_first[:steps]
    names = [e['name'] for e in newest_first]
    if migration in names:
        return newest_first[:names.index(migration) + 1]
    if migration not in known:
        raise PrismaError(unknown_migration(migration, known))
    # Not applied (already rolled back, pending or failed): roll back what was applied after it, by name.
    return [e for e in newest_first if e['name'] > migration]


def unknown_migration(name, known):
    near = sorted(known)[-5:]
    return ("unknown migration '%s': it is neither in the migrations folder nor in %s; give the folder's full "
            'name (%s)' % (name, MIGRATIONS_TABLE, ', '.join(near) if near else 'the folder has no migrations'))


# -- which statements of a failed migration were committed ---------------------------------------
# Prisma's JavaScript schema engine (a driver adapter in prisma.config.ts) hands a migration script to the
# adapter's executeScript(), which in @prisma/adapter-pg 6.19 is
#     script.split(";").map((stmt) => stmt.trim()).filter((stmt) => stmt.length > 0)
# and runs each piece with its own client.query(), in autocommit: every statement before the failing one is
# committed, and Prisma's error does not say which one failed (applied_steps_count stays 0). Prisma's native
# schema engine and this module's native engine send the whole script as one simple query instead: PostgreSQL
# runs it as one implicit transaction, so nothing of a failing script stays, unless the script has its own
# COMMIT. To know which statement failed under the JavaScript engine, the module loads STATEMENT_RECORDER
# into the CLI (NODE_OPTIONS=--require): it notes, for each query node-postgres runs without parameters,
# "ok" or "error" and the sha256 of the query text; never the text itself, never a parameter.
STATEMENT_LOG_ENV = 'RUNBOOK_PRISMA_STATEMENT_LOG'
STATEMENT_RECORDER = r"""// runbook.deploy.prisma_migrate: loaded into the Prisma CLI (NODE_OPTIONS=--require) during migrate deploy.
// Notes "ok <sha256>" or "error <sha256>" for every query node-postgres runs without parameters (Prisma's
// driver adapter runs migration statements so), so the module can tell which statements of a failed
// migration were committed. It records no query text and no parameter, and never changes what runs.
'use strict';
const log = process.env.RUNBOOK_PRISMA_STATEMENT_LOG;
if (log) {
  const Module = require('module');
  const fs = require('fs');
  const crypto = require('crypto');
  const note = (line) => { try { fs.appendFileSync(log, line + '\n'); } catch (e) { /* never break Prisma */ } };
  const patch = (pg) => {
    const Client = pg.Client;
    if (Client.prototype.__runbookRecorded) return;
    const query = Client.prototype.query;
    Client.prototype.query = function (text, values, callback) {
      if (typeof text !== 'string' || !(values === undefined || typeof values === 'function')) {
        return query.apply(this, arguments);
      }
      const digest = crypto.createHash('sha256').update(text, 'utf8').digest('hex');
      const done = typeof values === 'function' ? values : callback;
      if (typeof done === 'function') {
        return query.call(this, text, (err, res) => { note((err ? 'error ' : 'ok ') + digest); return done(err, res); });
      }
      const result = query.call(this, text);
      if (result && typeof result.then === 'function') {
        result.then(() => note('ok ' + digest), () => note('error ' + digest));
      }
      return result;
    };
    Client.prototype.__runbookRecorded = true;
    note('recording');
  };
  const load = Module._load;
  Module._load = function () {
    const exported = load.apply(this, arguments);
    try {
      if (exported && typeof exported.Client === 'function' && typeof exported.Pool === 'function' &&
          exported.Client.prototype && typeof exported.Client.prototype.query === 'function') {
        patch(exported);
      }
    } catch (e) { /* never break Prisma */ }
    return exported;
  };
}
"""
JS_ENGINE_MARKERS = ('using driver adapter', 'external connector error')
JS_TRIM = re.compile(r'^[\s\ufeff]+|[\s\ufeff]+$')
SQL_COMMENT_LINE = re.compile(r'^\s*--.*$', re.M)
TRANSACTION_CONTROL = re.compile(r'^(?:COMMIT|END|ROLLBACK|ABORT|BEGIN|START\s+TRANSACTION)\b', re.I)


def js_statements(script):
    """A script split as Prisma's JavaScript engine splits it (on every ';', trimmed, empty pieces dropped)."""
    pieces = (JS_TRIM.sub('', piece) for piece in script.split(';'))
    return [piece for piece in pieces if piece]


def statement_digest(text):
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def short_statement(text, width=100):
    """A statement for a message: its comment lines dropped, whitespace folded, cut at width."""
    folded = ' '.join(SQL_COMMENT_LINE.sub('', text).split()) or ' '.join(text.split())
    return folded if len(folded) <= width else folded[:width - 3] + '...'


def listed(statements, first=0):
    """Statements numbered from first + 1 for a message: [1] DELETE FROM ..., [2] ..."""
    return ', '.join('[%d] %s' % (first + n + 1, short_statement(text)) for n, text in enumerate(statements))


def read_statement_log(path):
    """(recorder active, [(ok|error, digest)]) from the recorder's log; (False, []) when it never loaded."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (IOError, OSError):
        return False, []
    entries = [tuple(line.split(' ', 1)) for line in lines if line.startswith(('ok ', 'error '))]
    return 'recording' in lines, entries


def locate_failure(statements, entries):
    """Index of the failed statement: the last recorded error on one of them that follows, as consecutive ok
    entries, every statement before it (executeScript stops at the first failure). None when not found."""
    digests = [statement_digest(text) for text in statements]
    for position in range(len(entries) - 1, -1, -1):
        outcome, digest = entries[position]
        if outcome != 'error':
            continue
        for index in range(len(digests)):
            if digests[index] != digest or index > position:
                continue
            before = entries[position - index:position]
            if all(o == 'ok' and d == digests[i] for i, (o, d) in enumerate(before)):
                return index
    return None


def failed_statements(script, split, recorder=None):
    """What stayed of a failed migration's script: a dict with execution (one_by_one | one_transaction),
    exact (bool), committed, failed (or None), not_run (full statement texts) and summary (for the message).

    split: whether the engine ran the statements one by one (Prisma's JavaScript engine); recorder: the
    (active, entries) read from the statement recorder's log, or None when it was not used.
    """
    statements = js_statements(script)
    count = len(statements)
    if not split:
        controlled = [t for t in statements if TRANSACTION_CONTROL.match(SQL_COMMENT_LINE.sub('', t).strip())]
        report = dict(execution='one_transaction', committed=[], failed=None, not_run=[], exact=not controlled)
        if controlled:
            report['summary'] = (
                'The script ran as one query, and it has its own transaction control (%s): what it ran before its '
                'last COMMIT ahead of the failure stayed committed, the rest was rolled back; check the database.'
                % ', '.join(short_statement(t, 30) for t in controlled[:3]))
        else:
            report['summary'] = ('None of its %d statement(s) were committed: the script ran as one query, in one '
                                 'transaction, which PostgreSQL rolled back.' % count)
        return report
    report = dict(execution='one_by_one', committed=[], failed=None, not_run=[], exact=False)
    how = ('Prisma\'s JavaScript engine ran its %d statement(s) one by one, each committed on its own' % count)
    active, entries = recorder or (False, [])
    index = locate_failure(statements, entries) if active else None
    if index is None:
        report['summary'] = (
            '%s; which of them ran before the failure could not be told (%s), so any of them may be committed: %s.'
            % (how, 'the statement recorder saw none of them fail' if active else
               'the driver adapter is not node-postgres' if recorder is not None else 'not recorded',
               listed(statements)))
        return report
    report.update(exact=True, committed=statements[:index], failed=statements[index],
                  not_run=statements[index + 1:])
    parts = ['committed: %s' % (listed(report['committed']) if report['committed'] else 'none')]
    parts.append('failed: [%d] %s' % (index + 1, short_statement(report['failed'])))
    parts.append('not run: %s' % (listed(report['not_run'], index + 1) if report['not_run'] else 'none'))
    report['summary'] = '%s: %s.' % (how, '; '.join(parts))
    return report


# -- the Prisma CLI -----------------------------------------------------------------------------
def clean_output(text):
    return ANSI.sub('', text or '').replace('\r', '')


def tail(text, count=20):
    lines = [line.rstrip() for line in clean_output(text).splitlines() if line.strip()]
    return '\n'.join(lines[-count:])


def parse_cli_error(text):
    """Code, migration name, database message and summary from the Prisma CLI's error output."""
    text = clean_output(text)
    code = re.search(r'Error:\s*(P\d{4})\b', text)
    migration = None
    for pattern in (r'Migration name:\s*(\S+)', r'with migration_name="([^"]+)"', r'The `([^`]+)` migration started at',
                    r'[Mm]igration `([^`]+)`', r'[Mm]igration (\S+) could not be found'):
        match = re.search(pattern, text)
        if match:
            migration = match.group(1)
            break
    db_message = None
    match = re.search(r'Database error:\s*\n(.+?)(?:\n\s*\n|\Z)', text, re.S)
    if match:
        db_message = ' '.join(line.strip() for line in match.group(1).splitlines() if line.strip())
    elif 'external connector error' in text:
        db_message = database_message(text.split('external connector error', 1)[1])
    summary = None
    match = re.search(r'^Error:\s*(.*)$', text, re.M)
    if match:
        after = text[match.start():].splitlines()
        lines = [line.strip() for line in after if line.strip() and not TRACE_LINE.match(line)]
        lines[0] = lines[0][len('Error:'):].strip()
        summary = ' '.join(line for line in lines if line)[:1500]
    sql_state = re.search(r'Database error code:\s*(\S+)', text)
    return dict(code=code.group(1) if code else None, migration=migration, database_message=db_message,
                summary=summary, sql_state=sql_state.group(1) if sql_state else None)


def node_script(path):
    """Whether path is a script run by Node (#! ... node)."""
    try:
        with open(path, 'rb') as handle:
            first = handle.readline(200)
    except (IOError, OSError):
        return False
    return first.startswith(b'#!') and b'node' in first


def package_version(executable):
    """The version of the prisma package an executable belongs to (read from package.json), or None."""
    directory = os.path.dirname(os.path.realpath(executable))
    for dummy in range(4):
        package = os.path.join(directory, 'package.json')
        if os.path.isfile(package):
            try:
                with open(package) as handle:
                    data = json.load(handle)
            except ValueError:
                return None
            return data.get('version') if data.get('name') == 'prisma' else None
        directory = os.path.dirname(directory)
    return None


class PrismaEngine(object):
    """What the module needs of an engine: check(), deploy() -> (rc, output, seconds), resolve_applied(name) and
    resolve_rolled_back(name) -> method; ``name``, ``label`` (the deploy step in messages) and ``version``."""

    name = None
    label = None
    version = None
    # (recorder active, entries) of the last deploy's statement recorder, or None (see STATEMENT_RECORDER).
    statement_log = None

    def failure(self, step, rc, output, hint=''):
        parsed = parse_cli_error(output)
        if not parsed['code'] and not parsed['summary']:
            return PrismaError('%s failed (%s) without a Prisma error in its output: %s%s' % (
                step, describe_rc(rc), tail(output, 8).replace('\n', ' / ') or 'no output', hint), output=tail(output))
        return PrismaError('%s failed (%s): %s%s' % (step, parsed['code'] or describe_rc(rc), parsed['summary'], hint),
                           code=parsed['code'], migration=parsed['migration'],
                           database_message=parsed['database_message'], output=tail(output))


class PrismaCli(PrismaEngine):
    """The project's own Prisma CLI (engine C(cli)): ``migrate deploy`` and ``migrate resolve``."""

    name = 'cli'
    label = 'prisma migrate deploy'

    def __init__(self, module, runner, project_path, executable=None, node_executable=None, schema=None,
                 config=None, url=None, url_env='DATABASE_URL', timeout=None, secrets=()):
        self.module = module
        self.runner = runner
        self.project_path = project_path
        self.executable = executable or os.path.join(project_path, 'node_modules', '.bin', 'prisma')
        self.node_executable = node_executable
        self.schema = schema
        self.config = config
        self.url = url
        self.url_env = url_env
        self.timeout = timeout
        self.secrets = [str(s) for s in (url,) + tuple(secrets) if s]
        self.prefix = None
        self.version = None

    def check(self):
        """Find the CLI and Node before any database work; raise PrismaError naming the fix."""
        exe = self.executable
        if not os.path.exists(exe):
            raise PrismaError("no Prisma CLI at %s: run 'npm ci' in project_path (prisma must be in the project's "
                              'dependencies), or set executable' % exe)
        if os.path.isdir(exe) or not os.access(exe, os.X_OK):
            raise PrismaError('the Prisma CLI %s is not an executable file; set executable to the prisma binary' % exe)
        prefix = [exe]
        if self.node_executable or node_script(exe):
            node = self.node_executable or find_tool('node')
            if not node:
                raise PrismaError('Node.js is needed to run the Prisma CLI %s but no node is on PATH (%s); install '
                                  'Node.js or set node_executable' % (exe, os.environ.get('PATH', '')))
            if not (os.path.isfile(node) and os.access(node, os.X_OK)):
                raise PrismaError('node_executable %s is not an executable file; point it at the Node.js binary'
                                  % node)
            prefix = [node, exe]
        self.prefix = prefix
        self.version = package_version(exe)

    def argv(self, *args):
        argv = list(self.prefix) + list(args)
        if self.schema:
            argv.append('--schema=%s' % self.schema)
        if self.config:
            argv.append('--config=%s' % self.config)
        return argv

    def environment(self):
        env = {self.url_env: self.url, 'CHECKPOINT_DISABLE': '1', 'PRISMA_HIDE_UPDATE_MESSAGE': '1',
               'NO_COLOR': '1', 'FORCE_COLOR': '0', 'CI': '1'}
        return env

    def run(self, argv, step, extra_env=None):
        """Run the CLI in project_path with the URL in its environment; return (rc, output)."""
        command = list(argv)
        timeout_tool = find_tool('timeout') if self.timeout else None
        if timeout_tool:
            command = [timeout_tool, '--kill-after=10', str(self.timeout)] + command
        started = time.time()
        env = self.environment()
        env.update(extra_env or {})
        rc, out, err = self.runner.run(command, env=env, cwd=self.project_path)
        output = clean_output((out or '') + '\n' + (err or ''))
        for secret in self.secrets:  # never hand the URL or its password back
            output = output.replace(secret, '********')
        if timeout_tool and rc in (124, 137):
            raise PrismaError('%s timed out after %s seconds (timeout); the database may be left as Prisma left it: '
                              'check state=status' % (step, self.timeout), output=tail(output))
        return rc, output, round(time.time() - started, 3)

    def deploy(self):
        """Run migrate deploy; return (rc, output, seconds). Errors are judged by the caller, with the table.

        The statement recorder rides along (see STATEMENT_RECORDER); statement_log holds what it saw."""
        with PrivateWorkspace(prefix='runbook-prisma-') as work:
            recorder = os.path.join(work.path, 'statement-recorder.js')
            log = os.path.join(work.path, 'statements.log')
            with open(recorder, 'w') as handle:
                handle.write(STATEMENT_RECORDER)
            node_options = '%s --require %s' % (os.environ.get('NODE_OPTIONS', ''), json.dumps(recorder))
            result = self.run(self.argv('migrate', 'deploy'), 'prisma migrate deploy',
                              extra_env={'NODE_OPTIONS': node_options.strip(), STATEMENT_LOG_ENV: log})
            self.statement_log = read_statement_log(log)
        return result

    def resolve_applied(self, name):
        step = 'prisma migrate resolve --applied'
        rc, output, dummy = self.run(self.argv('migrate', 'resolve', '--applied', name), step)
        if rc != 0:
            raise self.failure(step, rc, output)
        return 'cli'

    def resolve_rolled_back(self, name):
        """Mark a failed migration rolled back; return 'cli', or None when the CLI's engine cannot run here."""
        step = 'prisma migrate resolve --rolled-back'
        rc, output, dummy = self.run(self.argv('migrate', 'resolve', '--rolled-back', name), step)
        if rc == 0:
            return 'cli'
        if ENGINE_MISSING.search(output):
            return None
        raise self.failure(step, rc, output)


# -- the down path and direct table updates, under Prisma's advisory lock -----------------------
class MigrationLock(down.AdvisoryLock):
    """Hold Prisma's migration advisory lock on a connection; wait at most ``wait`` seconds for it."""

    def __init__(self, connection_, wait):
        super(MigrationLock, self).__init__(
            connection_, ADVISORY_LOCK_KEY, wait,
            ('The Prisma migration lock', 'Wait for the other migration run (prisma migrate deploy) to finish, or '
                                          'raise timeout'))

    def __enter__(self):
        try:
            return super(MigrationLock, self).__enter__()
        except down.DownMigrationError as exc:
            raise PrismaError(str(exc))


pg_message = down.pg_message


def roll_back_one(connection_, db_schema, name, script, source=None):
    """In one transaction: run the down script (its text), mark the migration's applied row rolled back. Return
    seconds."""
    table = pg.qualified(connection_, db_schema, MIGRATIONS_TABLE)
    applied = ' WHERE migration_name = %s AND finished_at IS NOT NULL AND rolled_back_at IS NULL'
    try:
        return down.run_down_script(
            connection_, name, script,
            claim=('SELECT id FROM ' + table + applied + ' FOR UPDATE', (name,)),
            record=('UPDATE ' + table + ' SET rolled_back_at = now()' + applied, (name,)), source=source)
    except down.DownMigrationError as exc:
        raise PrismaError(str(exc), migration=exc.migration, database_message=exc.database_message)


def mark_failed_rolled_back(connection_, db_schema, name):
    """What `prisma migrate resolve --rolled-back` records: rolled_back_at on the migration's failed rows."""
    table = pg.qualified(connection_, db_schema, MIGRATIONS_TABLE)
    with pg.transaction(connection_), connection_.cursor() as cursor:
        cursor.execute('UPDATE %s SET rolled_back_at = now() WHERE migration_name = %%s AND finished_at IS NULL '
                       'AND rolled_back_at IS NULL' % table, (name,))
        return cursor.rowcount
