# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Driving the Flyway command line and reading its ``-outputType=json`` output.

Pure functions: building argv and environment from options, and turning the JSON that Flyway 9, 10 and 11
print into plain dicts and ready-to-show messages.  The JSON shapes were read from the flyway/flyway
sources (tags flyway-9.22.3, flyway-10.22.0, flyway-11.20.3, ``api/output/*.java``, ``ErrorOutput``):

- every command prints one JSON object on stdout, success or failure;
- a failure prints ``{"error": {...}}``, or for ``migrate`` the partial migrate result plus ``"error"`` and
  ``"success": false``.  The error object has ``errorCode`` and ``message`` in every version; 9.x adds
  ``stackTrace``, ``lineNumber``, ``path``; 10.x adds ``cause`` (a chain of ``{message, stackTrace, cause}``);
  11.x shapes it per exception (a failed migration: ``sqlState``, ``sqlErrorCode``, ``lineNumber``, ``path``);
- ``validate`` exits 0 even when validation fails: ``validationSuccessful`` tells;
- exit codes: 0 success, 1 failure, 35 licensing (10.x+, e.g. ``undo`` in the Community edition).

Nothing here depends on the test double in ``tests/doubles/flyway``; the unit tests feed hand-written samples.
"""

from __future__ import annotations

import json
import os
import re

try:
    from urllib.parse import unquote_plus
except ImportError:  # pragma: no cover - Python 2 is not supported
    pass

from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg

COMMANDS = ('info', 'migrate', 'validate', 'repair', 'baseline', 'undo')
# Flags the module sets itself (from options); extra_args may not set them. Secrets must never be on argv.
RESERVED_FLAGS = {
    'url': 'db_url', 'user': 'login_user', 'password': 'login_password', 'outputType': None, 'outputFile': None,
    'configFiles': 'config_files', 'configFile': 'config_files', 'locations': 'locations', 'schemas': 'schemas',
    'target': 'target', 'baselineVersion': 'baseline_version', 'workingDirectory': 'working_dir',
    'dryRunOutput': None, 'jdbcProperties.password': 'login_password',
}
FAILED_STATES = ('Failed', 'Failed (Missing)', 'Failed (Future)')
APPLIED_STATES = ('Success', 'Baseline', 'Out of Order', 'Outdated', 'Future', 'Missing', 'Superseded')
PAID_EDITION = re.compile(r'not available in this edition|Edition Required|upgrade required|not supported by '
                          r'(OSS|Community)|Teams|Enterprise edition', re.I)
VERSION_RE = re.compile(r'^\d+([._]\d+)*$')


class FlywayError(Exception):
    """A Flyway step failed; the message is ready for fail_json.  ``details`` go into the failure result."""

    def __init__(self, message, details=None):
        super(FlywayError, self).__init__(message)
        self.details = details or {}


# -- inputs ---------------------------------------------------------------------------------------------------
def normalize_target(target):
    """Flyway's target from a runbook's words: V009 -> 009, 3_008 -> 3.008; latest/current/next as they are.

    A trailing ``?`` (Flyway: do not fail when no migration has that version) is kept.
    """
    if target is None:
        return None
    text = str(target).strip()
    optional = text.endswith('?')
    text = text.rstrip('?')
    if text.lower() in ('latest', 'current', 'next'):
        return text.lower()
    if text[:1] in ('V', 'v'):
        text = text[1:]
    if not VERSION_RE.match(text):
        raise FlywayError("target '%s' is not a Flyway version: use digits separated by dots or underscores "
                          "(9, V009, 3.8, 3_008), or latest, current or next" % target)
    return text.replace('_', '.') + ('?' if optional else '')


def jdbc_from_url(url):
    """(jdbc url, user, password) from a JDBC URL or a postgres:// URL (as DATABASE_URL carries it).

    Credentials found in a postgres:// URL are returned apart so that they travel in FLYWAY_USER and
    FLYWAY_PASSWORD, never on argv.  Raises FlywayError without echoing the URL.
    """
    if url.startswith('jdbc:'):
        if not re.match(r'^jdbc:[a-z0-9]+:', url):
            raise FlywayError('url is not a JDBC URL: expected jdbc:postgresql://host:port/database')
        return url, None, None
    if re.match(r'^postgres(ql)?://', url):
        try:
            params = pg.parse_db_url(url)
        except pg.PostgresError as exc:
            raise FlywayError('url: %s' % str(exc).replace('db_url', 'url'))
        if not params.get('dbname'):
            raise FlywayError('url has no database name: expected postgres://user:password@host:port/database')
        host = params.get('host', 'localhost')
        if ':' in host:
            host = '[%s]' % host
        query = ['%s=%s' % (key, params[key]) for key in ('sslmode', 'sslrootcert', 'connect_timeout',
                                                          'application_name') if params.get(key)]
        jdbc = 'jdbc:postgresql://%s:%s/%s%s' % (host, params.get('port', 5432), params['dbname'],
                                                 '?' + '&'.join(query) if query else '')
        return jdbc, params.get('user'), params.get('password')
    raise FlywayError('url must be a JDBC URL (jdbc:postgresql://host:port/database) or a postgres:// URL, not %s'
                      % (url.split(':', 1)[0] + ':...' if ':' in url else 'a bare word'))


def location_dirs(locations, working_dir):
    """Local directories named by filesystem locations (or bare paths), made absolute against working_dir."""
    dirs = []
    for location in locations:
        if location.startswith('filesystem:'):
            path = location[len('filesystem:'):]
        elif ':' in location.split('/')[0]:
            continue  # classpath:, s3:, gcs: -- Flyway resolves those itself
        else:
            path = location
        dirs.append((location, os.path.normpath(os.path.join(working_dir or os.getcwd(), os.path.expanduser(path)))))
    return dirs


# Flyway's default SQL migration names: V<version>__<description>.sql (versioned), R__<description>.sql
# (repeatable), U<version>__ (undo) and B<version>__ (baseline migrations of the paid editions).
MIGRATION_FILE_RE = re.compile(r'^[VRUB][^_]*__.*\.sql$', re.I)


def visible_file_names(directory):
    """Names of the files under directory and its subfolders, as Flyway scans a location; hidden files and folders
    (.gitkeep, .git) are skipped."""
    for dummy_root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith('.')]
        for name in files:
            if not name.startswith('.'):
                yield name


def count_migration_files(directory, any_name=False):
    """Files under directory named like Flyway SQL migrations, or with any_name (the naming is configured
    elsewhere) any file."""
    return sum(1 for name in visible_file_names(directory) if any_name or MIGRATION_FILE_RE.match(name))


def flyway_location(location, absolute):
    """The location as passed to Flyway: filesystem: with an absolute path (Flyway's default prefix is classpath:)."""
    return 'filesystem:%s' % absolute if not location.startswith(('classpath:', 's3:', 'gcs:')) else location


def check_extra_args(extra_args):
    for arg in extra_args:
        if not arg.startswith('-'):
            raise FlywayError("extra_args: '%s' is not a flag; give flags as -key=value (the command is the command "
                              "option)" % arg)
        key = arg.lstrip('-').split('=', 1)[0]
        if key in RESERVED_FLAGS or key.startswith('jdbcProperties.'):
            option = RESERVED_FLAGS.get(key)
            raise FlywayError("extra_args must not set -%s%s" % (
                key, ': use the %s option instead%s' % (option, ' (secrets go through the environment, never the command '
                                                                'line)' if option in ('login_password', 'login_user', 'db_url') else '')
                if option else ': the module sets it'))


def build_invocation(executable, command, locations=None, config_files=None, schemas=None, target=None,
                     baseline_version=None, extra_args=None, url=None, user=None, password=None):
    """(argv, env) for one Flyway run.  url, user and password go into FLYWAY_* variables, never argv."""
    argv = [executable, command, '-outputType=json']
    if config_files:
        argv.append('-configFiles=%s' % ','.join(config_files))
    if locations:
        argv.append('-locations=%s' % ','.join(locations))
    if schemas:
        argv.append('-schemas=%s' % ','.join(schemas))
    if target and command in ('info', 'migrate', 'validate', 'undo'):
        argv.append('-target=%s' % target)
    if baseline_version and command in ('baseline', 'migrate', 'info', 'validate'):
        argv.append('-baselineVersion=%s' % baseline_version)
    argv.extend(extra_args or [])
    env = {'REDGATE_DISABLE_TELEMETRY': 'true'}
    if url:
        env['FLYWAY_URL'] = url
    if user:
        env['FLYWAY_USER'] = user
    if password:
        env['FLYWAY_PASSWORD'] = password
    return argv, env


# -- output ---------------------------------------------------------------------------------------------------
def last_lines(text, count=6):
    lines = [line.strip() for line in (text or '').strip().splitlines() if line.strip()]
    return ' / '.join(lines[-count:]) if lines else 'no output'


def parse_json(command, rc, stdout, stderr):
    """The JSON object Flyway printed.  Tolerates log lines before it (some versions print them on stdout)."""
    text = (stdout or '').strip()
    doc = None
    if text:
        try:
            doc = json.loads(text)
        except ValueError:
            start = re.search(r'^\{', text, re.M)
            if start:
                try:
                    doc = json.loads(text[start.start():])
                except ValueError:
                    doc = None
    if isinstance(doc, dict):
        return doc
    both = '%s\n%s' % (stderr or '', stdout or '')
    hint = ''
    if rc == 127 or re.search(r'java: (command )?not found|JAVA_HOME|No java|Unable to locate a Java', both, re.I):
        hint = ' Flyway needs Java: install a Java runtime or set JAVA_HOME for the task (environment:).'
    elif rc == 126:
        hint = ' The executable is not runnable: check its permissions.'
    what = 'malformed JSON' if '{' in text else 'no JSON'
    raise FlywayError('flyway %s printed %s (exit code %s; is executable really Flyway, run with -outputType=json?): '
                      '%s.%s' % (command, what, rc, last_lines(both), hint))


def _cause_messages(cause):
    messages = []
    while isinstance(cause, dict):
        if cause.get('message'):
            messages.append(str(cause['message']).strip())
        cause = cause.get('cause')
    return messages


def _field(pattern, text):
    match = re.search(pattern, text or '', re.M)
    return match.group(1).strip() if match else None


def error_details(doc):
    """The ``error`` object of Flyway 9/10/11 as a plain dict, or None when there is none."""
    err = doc.get('error') if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None
    message = str(err.get('message') or doc.get('exception') or '').strip()
    path = err.get('path') or None
    causes = _cause_messages(err.get('cause'))
    db_message = _field(r'^Message\s*:\s*(.*(?:\n\s{2,}\S.*)*)', message)
    if not db_message and causes:
        db_message = causes[-1]
    script = os.path.basename(path) if path else _field(r'Script (\S+) failed', message)
    line = err.get('lineNumber')
    if line in (None, -1):
        line = _field(r'^Line\s*:\s*(\d+)', message)
        line = int(line) if line else None
    return dict(
        code=err.get('errorCode'),
        message=message,
        sql_state=err.get('sqlState') or _field(r'^SQL State\s*:\s*(\S+)', message),
        db_message=db_message,
        script=script,
        path=path,
        line=line,
        causes=causes,
    )


def is_paid_edition_error(rc, err):
    return rc == 35 or bool(err and PAID_EDITION.search(err.get('message') or ''))


def first_line(text):
    lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
    return lines[0] if lines else ''


def describe_error(command, rc, err):
    """One message for fail_json: what failed, Flyway's words, and what to do."""
    code = err.get('code') or 'ERROR'
    if command == 'undo' and is_paid_edition_error(rc, err):
        return ('flyway undo needs a paid edition (Flyway Teams/Enterprise, the Redgate edition); this Flyway said: %s. '
                'With Community Flyway, roll back by restoring the pre-migration backup or by applying a new forward '
                'migration that reverts the change.' % ' '.join(err['message'].split()))
    if err.get('script') and (code.startswith('FAILED_') or err.get('path')):
        where = ' at line %s' % err['line'] if err.get('line') else ''
        state = ', SQL state %s' % err['sql_state'] if err.get('sql_state') else ''
        return ('migration %s failed%s (%s%s): %s' % (err['script'], where, code, state,
                                                      ' '.join((err.get('db_message') or first_line(err['message'])).split())))
    if code == 'DB_CONNECTION':
        return ('flyway %s could not connect to the database: %s; check url, user and password and that the server is '
                'reachable' % (command, ' / '.join(line.strip() for line in err['message'].splitlines()
                                                   if line.strip() and not set(line.strip()) <= set('-'))))
    if code == 'NON_EMPTY_SCHEMA_WITHOUT_SCHEMA_HISTORY_TABLE':
        return ('flyway %s refused: %s Run command=baseline first (baseline_version = the version the existing schema '
                'corresponds to), or pass extra_args=[-baselineOnMigrate=true].' % (command, ' '.join(err['message'].split())))
    return 'flyway %s failed (%s): %s' % (command, code, ' '.join(err['message'].split()))


def migration_entry(item):
    """One migration of info/migrate output as a plain dict (version None for repeatable migrations)."""
    filepath = item.get('filepath') or ''
    entry = dict(
        version=item.get('version') or None,
        description=item.get('description'),
        category=item.get('category') or '',
        type=item.get('type') or '',
        script=os.path.basename(filepath) if filepath else None,
        filepath=filepath or None,
        execution_time=item.get('executionTime'),
    )
    if 'state' in item:
        entry.update(state=item.get('state'), installed_on=item.get('installedOnUTC') or None,
                     installed_by=item.get('installedBy') or None, undoable=item.get('undoable') == 'Yes')
    return entry


def migration_name(entry):
    if entry.get('script'):
        return entry['script']
    if entry.get('version'):
        return 'V%s (%s)' % (entry['version'], entry.get('description'))
    return 'R (%s)' % entry.get('description')


def summarize_info(doc):
    """schema_version, migrations, pending, applied and failed from ``info`` JSON."""
    if not isinstance(doc.get('migrations'), list):
        raise FlywayError('flyway info printed JSON without a migrations list; is executable really Flyway 9, 10 or 11?')
    migrations = [migration_entry(m) for m in doc['migrations'] if isinstance(m, dict)]
    return dict(
        schema_version=doc.get('schemaVersion') or None,
        migrations=migrations,
        # An outdated repeatable migration shows twice: its applied run as Outdated and the file as Pending.
        pending=[m for m in migrations if m.get('state') == 'Pending'],
        applied=[m for m in migrations if m.get('state') in APPLIED_STATES and m.get('installed_on')],
        failed=[m for m in migrations if m.get('state') in FAILED_STATES],
    )


def summarize_migrate(doc):
    migrations = [migration_entry(m) for m in doc.get('migrations') or [] if isinstance(m, dict)]
    return dict(
        schema_version_before=doc.get('initialSchemaVersion') or None,
        target_schema_version=doc.get('targetSchemaVersion') or None,
        applied=migrations,
        executed=doc.get('migrationsExecuted') if isinstance(doc.get('migrationsExecuted'), int) else len(migrations),
        success=doc.get('success', 'error' not in doc),
        warnings=[str(w) for w in doc.get('warnings') or []],
    )


def summarize_validate(doc):
    if 'validationSuccessful' not in doc:
        raise FlywayError('flyway validate printed JSON without validationSuccessful; is executable really Flyway 9, '
                          '10 or 11?')
    invalid = []
    for item in doc.get('invalidMigrations') or []:
        details = item.get('errorDetails') or {}
        filepath = item.get('filepath') or ''
        invalid.append(dict(version=item.get('version') or None, description=item.get('description'),
                            script=os.path.basename(filepath) if filepath else None,
                            code=details.get('errorCode'), message=details.get('errorMessage')))
    details = doc.get('errorDetails') or {}
    return dict(successful=bool(doc['validationSuccessful']), count=doc.get('validateCount'),
                invalid_migrations=invalid, error_code=details.get('errorCode'), error_message=details.get('errorMessage'),
                warnings=[str(w) for w in doc.get('warnings') or []])


def describe_invalid(validation):
    parts = []
    for item in validation['invalid_migrations']:
        name = item['script'] or (item['version'] and 'version %s' % item['version']) or item['description']
        parts.append('%s: %s (%s)' % (name, ' '.join((item['message'] or '').split()), item['code']))
    return '; '.join(parts) or validation.get('error_message') or 'no details'


def summarize_repair(doc):
    def names(key):
        return [dict(version=i.get('version') or None, description=i.get('description'),
                     script=os.path.basename(i['filepath']) if i.get('filepath') else None)
                for i in doc.get(key) or [] if isinstance(i, dict)]
    return dict(actions=[str(a) for a in doc.get('repairActions') or []], removed=names('migrationsRemoved'),
                deleted=names('migrationsDeleted'), aligned=names('migrationsAligned'),
                warnings=[str(w) for w in doc.get('warnings') or []])


def predict_repair(validation, info):
    """What repair would do, from validate (checksums, missing) and info (failed rows)."""
    removed = [dict(version=m['version'], description=m['description'], script=m['script']) for m in info['failed']]
    aligned, deleted = [], []
    for item in validation['invalid_migrations']:
        entry = dict(version=item['version'], description=item['description'], script=item['script'])
        if item['code'] in ('CHECKSUM_MISMATCH', 'DESCRIPTION_MISMATCH', 'TYPE_MISMATCH'):
            aligned.append(entry)
        elif item['code'] in ('APPLIED_VERSIONED_MIGRATION_NOT_RESOLVED', 'APPLIED_REPEATABLE_MIGRATION_NOT_RESOLVED'):
            deleted.append(entry)
    return dict(actions=[], removed=removed, deleted=deleted, aligned=aligned, warnings=[])


# -- connection options shared with prisma_migrate ----------------------------------------------------------
# JDBC query parameters that name a libpq keyword; the others (ssl, currentSchema, ApplicationName, ...) only
# concern the JDBC driver and stay in the URL handed to Flyway.
_JDBC_TO_LIBPQ = {'user': 'user', 'password': 'password', 'sslmode': 'sslmode', 'sslrootcert': 'sslrootcert',
                  'connectTimeout': 'connect_timeout'}


def conn_from_jdbc(url):
    """libpq keywords from a jdbc:postgresql://host:port/database?user=..&password=.. URL (None for other databases)."""
    if not url.startswith('jdbc:postgresql:'):
        return None
    rest = url[len('jdbc:'):]
    if not rest.startswith('postgresql://'):
        raise FlywayError('url: jdbc:postgresql URLs without a host (jdbc:postgresql:database) are not supported; '
                          'write jdbc:postgresql://host:port/database')
    try:
        conn = pg.parse_db_url(rest.split('?', 1)[0])
    except pg.PostgresError as exc:
        raise FlywayError('url: %s' % str(exc).replace('db_url', 'url'))
    query = rest.split('?', 1)[1] if '?' in rest else ''
    for pair in query.split('&'):
        key, dummy, value = pair.partition('=')
        if key in _JDBC_TO_LIBPQ and value:
            conn[_JDBC_TO_LIBPQ[key]] = unquote_plus(value)  # pgjdbc decodes with URLDecoder: + is a space
    return conn


def connection_settings(params):
    """(JDBC URL for FLYWAY_URL or None, libpq keywords or None) from the options prisma_migrate also has:
    db_url (a JDBC or postgres:// URL, alias url), login_host, login_port, login_user (alias user),
    login_password (alias password), db, ssl_mode, ca_cert, connect_timeout. Explicit options override the URL."""
    url = params.get('db_url')
    jdbc, conn = None, {}
    if url:
        jdbc, url_user, url_password = jdbc_from_url(url)
        if url.startswith('jdbc:'):
            try:
                conn = conn_from_jdbc(jdbc) or {}
            except FlywayError:
                # A JDBC URL Flyway reads but libpq cannot (several hosts, jdbc:postgresql:database) is passed on as
                # it is; only the down path, which connects itself, then needs the database from other options.
                conn = {}
        else:
            conn = pg.parse_db_url(url)
            conn.update(dict((k, v) for k, v in (('user', url_user), ('password', url_password)) if v))
    if params.get('login_unix_socket'):
        raise FlywayError('login_unix_socket: Flyway (JDBC) reaches PostgreSQL over TCP only; set login_host')
    explicit = dict(host=params.get('login_host'), port=params.get('login_port'), dbname=params.get('db'),
                    user=params.get('login_user'), password=params.get('login_password'),
                    sslmode=params.get('ssl_mode'), sslrootcert=params.get('ca_cert'))
    where = dict((k, v) for k, v in explicit.items() if k in ('host', 'port', 'dbname', 'sslmode', 'sslrootcert')
                 and v not in (None, ''))
    conn.update(dict((k, v) for k, v in explicit.items() if v not in (None, '')))
    # A user and password alone leave the database to Flyway's configuration files (flyway.url).
    if where:
        if not conn.get('dbname'):
            raise FlywayError('no database given: set db (with login_host and login_port), or db_url '
                              '(jdbc:postgresql://host:port/database or postgres://...)')
        host = conn.get('host') or 'localhost'
        query = ['%s=%s' % (key, conn[key]) for key in ('sslmode', 'sslrootcert') if conn.get(key)]
        jdbc = 'jdbc:postgresql://%s:%s/%s%s' % ('[%s]' % host if ':' in host else host, conn.get('port') or 5432,
                                                 conn['dbname'], '?' + '&'.join(query) if query else '')
    if conn and params.get('connect_timeout'):
        conn['connect_timeout'] = params['connect_timeout']
    return jdbc, (conn or None)


def read_config_files(paths):
    """The flyway.* settings of Flyway .conf files, later files win, and whether a TOML file (Flyway 10+'s
    flyway.toml, not read here) was among them. Java properties: key=value or key: value, # and ! comments, a
    trailing backslash continues the line, backslash escapes. Read for the down path, which connects itself."""
    settings, toml = {}, False
    for path in paths:
        if path.endswith('.toml'):
            toml = True
            continue
        with open(path, 'rb') as handle:
            text = handle.read().decode('utf-8', 'replace')
        logical, pending = [], ''
        for raw in text.splitlines():
            line = raw.strip() if not pending else raw.lstrip()
            if not pending and (not line or line[0] in '#!'):
                continue
            if (len(line) - len(line.rstrip('\\'))) % 2 == 1:  # an odd number of backslashes continues the line
                pending += line[:-1]
                continue
            logical.append(pending + line)
            pending = ''
        if pending:
            logical.append(pending)
        for line in logical:
            match = re.match(r'^((?:[^=:\s\\]|\\.)+)\s*[=:\s]\s*(.*)$', line)
            if not match:
                continue
            key = re.sub(r'\\(.)', r'\1', match.group(1))
            value = re.sub(r'\\u([0-9a-fA-F]{4})', lambda m: chr(int(m.group(1), 16)), match.group(2))
            value = re.sub(r'\\(.)', lambda m: {'t': '\t', 'n': '\n', 'r': '\r', 'f': '\f'}.get(m.group(1), m.group(1)),
                           value)
            if key.startswith('flyway.'):
                settings[key[len('flyway.'):]] = value
    return settings, toml


# -- the down path (state=rolled_back): Flyway's history and the project's rollback scripts -------------------
# Flyway's PostgreSQL migration lock (PostgreSQLAdvisoryLockTemplate): this constant plus the Java hashCode of
# the quoted history table, "schema"."table". Holding it makes a concurrent `flyway migrate` wait for us.
LOCK_MAGIC_NUM = 77431708279161
HISTORY_TABLE = 'flyway_schema_history'
# Down scripts: Flyway's undo naming U<version>__<description>.sql (in the migration locations or the down scripts
# folder) and, in the down scripts folder only (never a migration location), runbook 002's rollback_V3_013.sql
# (rollback_V3_013_add_index.sql, rollback-V3_013.sql) or V3_013__<description>.sql.
UNDO_SCRIPT_RE = re.compile(r'^U(?P<version>\d+(?:[._]\d+)*)__.*\.sql$', re.I)
ROLLBACK_SCRIPT_RE = re.compile(r'^(?:rollback[_-]?)?V(?P<version>\d+(?:[._]\d+)*)(?:(?:__|[_.-])(?=\D).*)?\.sql$',
                                re.I)


def java_hash(text):
    """Java's String.hashCode (UTF-16 code units, signed 32-bit)."""
    value = 0
    encoded = text.encode('utf-16-be')
    for index in range(0, len(encoded), 2):
        value = (31 * value + (encoded[index] << 8 | encoded[index + 1])) & 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def lock_key(schema, table):
    """Flyway's key for the history table: PostgreSQL's doQuote doubles embedded double quotes."""
    def quoted(name):
        return '"%s"' % name.replace('"', '""')
    return LOCK_MAGIC_NUM + java_hash('%s.%s' % (quoted(schema), quoted(table)))


def version_key(version):
    """Flyway compares versions part by part as numbers, trailing zeros ignored: 3.013 == 3.13, 1.0 == 1."""
    parts = [int(part) for part in re.split(r'[._]', str(version).strip().lstrip('Vv'))]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def down_scripts_in(directory, undo_only):
    """{version key: [paths]} of the down scripts in directory (subfolders too, as Flyway scans locations)."""
    found = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in sorted(files):
            match = UNDO_SCRIPT_RE.match(name) or (None if undo_only else ROLLBACK_SCRIPT_RE.match(name))
            if match:
                found.setdefault(version_key(match.group('version')), []).append(os.path.join(root, name))
    return found


def read_history(connection, schema, table):
    """The history rows, oldest first; None when the table does not exist."""
    exists = pg.query_all(connection, 'SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s',
                          (schema, table))
    if not exists:
        return None
    rows = pg.query_all(connection, 'SELECT installed_rank, version, description, type, script, success FROM %s '
                        'ORDER BY installed_rank' % pg.qualified(connection, schema, table))
    return [dict(installed_rank=r[0], version=r[1], description=r[2], type=r[3], script=r[4], success=r[5])
            for r in rows]


def applied_versioned(rows):
    """The versioned migrations the history records as applied, in the order they were applied. A Teams undo
    (an UNDO_* row) or the DELETE row repair writes for a migration whose file is gone takes its version out again;
    baselines (BASELINE, SQL_BASELINE, ...) and the schema-creation marker are not migrations."""
    applied = []
    for row in rows:
        kind = (row['type'] or '').upper()
        if not row['version'] or not row['success'] or kind.endswith('BASELINE') or kind == 'SCHEMA':
            continue
        if kind.startswith('UNDO') or kind == 'DELETE':
            applied = [a for a in applied if version_key(a['version']) != version_key(row['version'])]
        else:
            applied.append(row)
    return applied


def select_rollback(rows, target=None, steps=None, migration=None):
    """The applied versioned migrations to roll back, newest (last applied) first: those above target, the newest
    steps, or migration (a version or script name) and every one applied after it."""
    newest_first = list(reversed(applied_versioned(rows)))
    if steps is not None:
        if steps < 1:
            raise FlywayError('steps must be 1 or more')
        return newest_first[:steps]
    if migration is not None:
        key = migration if migration.lower().endswith('.sql') else version_key(normalize_target(migration))
        for index, row in enumerate(newest_first):
            # Flyway records the script relative to its location (sub/V2__x.sql); results name the file.
            if (isinstance(key, str) and key in (row['script'], os.path.basename(row['script'] or ''))) or \
                    (not isinstance(key, str) and version_key(row['version']) == key):
                return newest_first[:index + 1]
        return []
    bound = version_key(target)
    return [row for row in newest_first if version_key(row['version']) > bound]


def known_versions(rows, local_versions):
    """Every version the history or the migration files know (for telling a typo from a real boundary)."""
    known = set(version_key(r['version']) for r in rows if r['version'])
    known.update(version_key(v) for v in local_versions)
    return known


def local_versions(directories):
    """Versions of the V<version>__*.sql files in the migration locations."""
    versions = []
    for directory in directories:
        for name in visible_file_names(directory):
            match = re.match(r'^V(\d+(?:[._]\d+)*)__.*\.sql$', name, re.I)
            if match:
                versions.append(match.group(1))
    return versions


def current_version(rows):
    """The schema version the history records: the highest applied versioned migration or baseline."""
    versions = [r['version'] for r in applied_versioned(rows)]
    versions += [r['version'] for r in rows if (r['type'] or '').upper().endswith('BASELINE') and r['success']
                 and r['version']]
    return max(versions, key=version_key) if versions else None
