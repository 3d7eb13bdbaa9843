# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The down path that prisma_migrate and flyway_migrate share.

Neither Prisma nor Flyway Community can roll a migration back; the runbooks keep hand-written down scripts
(Prisma: ``down.sql`` beside each ``migration.sql``; Flyway: runbook 002's ``rollback_scripts/rollback_V3_013.sql``
or Flyway's own ``U<version>__*.sql`` naming) and run them with psql. Both modules do it the same way:

- every migration to roll back must have its down script before anything runs (:func:`missing_scripts`);
- the tool's own migration lock is held the whole time (:class:`AdvisoryLock`: the key ``prisma migrate deploy``
  or ``flyway migrate`` takes on PostgreSQL), so a deployment started meanwhile waits instead of interleaving;
- what to roll back is chosen again once the lock is held (:func:`roll_back`): a migration run that held it may have
  applied something newer meanwhile;
- each migration, newest first, in ONE transaction (:func:`run_down_script`): its history row is claimed
  (``FOR UPDATE``, still applied?), the down script runs, the history row is fixed; a failing script rolls the whole
  transaction back, so that migration stays applied and the earlier ones stay rolled back. A run killed
  half-way leaves every migration either rolled back and recorded so, or untouched: running it again finishes.
  A down script that controls transactions itself (BEGIN; ... COMMIT; as psql scripts often are) would break that,
  so it is refused before anything runs (:func:`read_script`).

Only the history table's bookkeeping differs (Prisma sets ``rolled_back_at``; Flyway's history loses the row, as
when the migration never ran), so the callers pass those statements in.
"""

from __future__ import annotations

import re
import time

from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg


class DownMigrationError(Exception):
    """A refusal or failure of the down path; ``migration`` names the migration, ``database_message`` the error."""

    def __init__(self, message, migration=None, database_message=None):
        super(DownMigrationError, self).__init__(message)
        self.migration = migration
        self.database_message = database_message


def pg_message(exc):
    """A psycopg2 error as one line, with its SQLSTATE."""
    text = (getattr(exc, 'pgerror', None) or str(exc)).strip()
    code = getattr(exc, 'pgcode', None)
    return ('%s (SQLSTATE %s)' % (' '.join(text.split()), code)) if code else ' '.join(text.split())


class AdvisoryLock(object):
    """Hold a session advisory lock on a connection; wait at most ``wait`` seconds (0 or None: no limit).

    ``holder`` is (the lock's name, what to do while another run holds it), for the refusal."""

    def __init__(self, connection_, key, wait, holder):
        self.connection = connection_
        self.key = key
        self.wait = wait
        self.holder = holder

    def __enter__(self):
        deadline = time.time() + self.wait if self.wait else None
        while True:
            if pg.query_all(self.connection, 'SELECT pg_try_advisory_lock(%s)', (self.key,))[0][0]:
                return self
            if deadline is not None and time.time() >= deadline:
                raise DownMigrationError('%s (pg_advisory_lock(%d)) is still held by another session after %s seconds; '
                                         'nothing was changed. %s' % (self.holder[0], self.key, self.wait,
                                                                      self.holder[1]))
            time.sleep(0.5)

    def __exit__(self, *exc):
        try:
            if not self.connection.closed:
                self.connection.rollback()
                self.connection.autocommit = True
                pg.query_all(self.connection, 'SELECT pg_advisory_unlock(%s)', (self.key,))
        except Exception:  # pylint: disable=broad-except
            pass  # closing the connection releases the lock anyway
        return False


def missing_scripts(plan):
    """The entries of plan ({name, down_script, expected}) whose down script is not a readable file."""
    return ['%s (expected %s)' % (item['name'], item['expected']) for item in plan
            if not item.get('down_script') or not _readable(item['down_script'])]


def _readable(path):
    try:
        with open(path, 'rb'):
            return True
    except (IOError, OSError):
        return False


def refuse_missing(plan, how_to_add):
    """Raise before anything runs when a migration of plan has no down script."""
    missing = missing_scripts(plan)
    if missing:
        raise DownMigrationError('refusing to roll back: no down script for %s. Nothing was rolled back; %s'
                                 % ('; '.join(missing), how_to_add), migration=missing[0].split(' ', 1)[0])


def require_scripts(pending, where):
    """require_down_scripts (runbooks 000 and 002, "rollback scripts prepared"): every migration about to be applied
    has one down script that the rollback could run. pending: [(migration name, [paths of its down scripts])], in
    order; where: how the scripts are named and placed, for the message. Raises before anything is applied."""
    missing = [name for name, paths in pending if not paths]
    for name, paths in pending:
        if len(paths) > 1:
            raise DownMigrationError('require_down_scripts: more than one down script for %s: %s; keep one. Nothing '
                                     'was applied' % (name, ', '.join(paths)), migration=name)
        if paths:
            try:  # what the rollback would refuse (its own BEGIN/COMMIT, not UTF-8, empty), refused now
                read_script(name, paths[0])
            except DownMigrationError as exc:
                reason = str(exc).replace('nothing was rolled back', 'nothing was applied')
                raise DownMigrationError('require_down_scripts: %s' % reason, migration=name)
    if missing:
        raise DownMigrationError(
            'require_down_scripts: no down script for the pending migration(s) %s (%s); nothing was applied. Write '
            'them, or deploy without require_down_scripts (a failed deployment then goes back with the backup taken '
            'before the migrations)' % (', '.join(missing), where), migration=missing[0])


# Statements that begin or end a transaction; SAVEPOINT and ROLLBACK TO SAVEPOINT work inside ours.
_TRANSACTION_CONTROL = re.compile(r'^(BEGIN|COMMIT|END|ABORT|START\s+TRANSACTION|PREPARE\s+TRANSACTION|'
                                  r'ROLLBACK(?!\s+TO\b)(?!\s+PREPARED\b))\b', re.I)
_SKIPPED = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$[A-Za-z_0-9]*\$).*?\1", re.S)


def top_level_statements(script):
    """The script's statements with comments, strings and dollar-quoted bodies blanked (enough to find statement
    keywords, not to run them). A SQL-standard function body (BEGIN ATOMIC ... END) stays one statement."""
    text = _SKIPPED.sub(' ', script)
    statements, pending = [], None
    for part in text.split(';'):
        part = ' '.join(part.split())
        if pending is not None:
            pending += '; ' + part
            if re.match(r'^END\b', part, re.I):
                statements.append(pending)
                pending = None
            continue
        if re.search(r'\bBEGIN\s+ATOMIC\b', part, re.I):
            pending = part
            continue
        if part:
            statements.append(part)
    if pending:
        statements.append(pending)
    return statements


def read_script(name, path):
    """A down script's text (UTF-8, a byte order mark dropped), refused with a clear message when it cannot run in
    the one transaction the down path gives it."""
    try:
        with open(path, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError) as exc:
        raise DownMigrationError("cannot read the down script %s of migration '%s': %s; nothing was rolled back"
                                 % (path, name, exc.strerror or exc), migration=name)
    try:
        script = raw.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise DownMigrationError("the down script %s of migration '%s' is not UTF-8 (byte %d); nothing was rolled back. "
                                 'Save it as UTF-8' % (path, name, exc.start), migration=name)
    script = script.lstrip('\ufeff')
    for statement in top_level_statements(script):
        if _TRANSACTION_CONTROL.match(statement):
            raise DownMigrationError(
                "the down script %s of migration '%s' controls transactions itself (%s); nothing was rolled back. Each "
                'down script runs in one transaction with the fix of the history table, so that a failure or a kill '
                'leaves the migration applied and whole: remove its BEGIN/COMMIT/ROLLBACK'
                % (path, name, statement.split()[0].upper()), migration=name)
    if not script.strip():
        raise DownMigrationError("the down script %s of migration '%s' is empty; nothing was rolled back"
                                 % (path, name), migration=name)
    return script


def run_down_script(connection_, name, script, claim, record, search_path=None, source=None):
    """In one transaction: claim the migration's history row, run its down script (text from :func:`read_script`),
    fix the history. Return seconds.

    ``claim`` and ``record`` are (sql, args): ``claim`` must return a row while the migration is still applied
    (and lock it, FOR UPDATE); ``record`` writes that it is not any more. ``search_path``: a schema put first;
    ``source``: the script's path, for messages."""
    named = ('the down script %s' % source) if source else 'the down script'
    started = time.time()
    with pg.transaction(connection_), connection_.cursor() as cursor:
        if search_path:
            cursor.execute("SELECT set_config('search_path', %s || ', ' || current_setting('search_path'), true)",
                           (search_path,))
        cursor.execute(claim[0], claim[1])
        if not cursor.fetchall():
            raise DownMigrationError("migration '%s' is no longer applied (changed while this task ran); nothing was "
                                     'rolled back for it' % name, migration=name)
        try:
            cursor.execute(script)
        except pg.psycopg2.Error as exc:
            # Leaving the with block rolls the whole transaction back.
            raise DownMigrationError("%s of migration '%s' failed, its transaction was rolled back and the migration "
                                     'is still applied: %s' % (named, name, pg_message(exc)),
                                     migration=name, database_message=pg_message(exc))
        if connection_.get_transaction_status() != pg.psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
            # read_script refuses transaction control it can see; this catches what it cannot (EXECUTE ...).
            raise DownMigrationError("%s of migration '%s' ended the transaction itself; what it did up to then may be "
                                     'committed while the migration is still recorded applied. Check the schema by '
                                     'hand' % (named, name), migration=name)
        cursor.execute(record[0], record[1])
    return round(time.time() - started, 3)


def roll_back(lock, make_plan, run_one):
    """Hold lock, choose what to roll back with make_plan() (now that nothing else migrates), roll each entry back
    in order with run_one(item) -> seconds; return what was rolled back, each entry with its duration.

    On a failure the entries already rolled back are in the exception's ``rolled_back`` attribute."""
    done = []
    try:
        with lock:
            for item in make_plan():
                seconds = run_one(item)
                done.append(dict(((k, v) for k, v in item.items() if k not in ('expected', 'sql')),
                                 duration=seconds))
    except Exception as exc:
        exc.rolled_back = done
        raise
    return done
