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
- each migration, newest first, in ONE transaction (:func:`run_down_script`): its history row is claimed
  (``FOR UPDATE``, still applied?), the down script runs, the history row is fixed; a failing script rolls the whole
  transaction back, so that migration stays applied and the earlier ones stay rolled back. A run killed
  half-way leaves every migration either rolled back and recorded so, or untouched: running it again finishes.

Only the history table's bookkeeping differs (Prisma sets ``rolled_back_at``; Flyway's history loses the row, as
when the migration never ran), so the callers pass those statements in.
"""

from __future__ import annotations

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

    ``holder`` says in the refusal who normally holds it, and how to go on."""

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
                raise DownMigrationError('%s (pg_advisory_lock(%d)) is still held after %s seconds; %s'
                                         % (self.holder[0], self.key, self.wait, self.holder[1]))
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


def run_down_script(connection_, name, script_path, claim, record, search_path=None):
    """In one transaction: claim the migration's history row, run its down script, fix the history. Return seconds.

    ``claim`` and ``record`` are (sql, args): ``claim`` must return a row while the migration is still applied
    (and lock it, FOR UPDATE); ``record`` writes that it is not any more."""
    with open(script_path, 'rb') as handle:
        script = handle.read().decode('utf-8')
    started = time.time()
    with pg.transaction(connection_), connection_.cursor() as cursor:
        if search_path:
            cursor.execute('SELECT set_config(%s, %s, true)', ('search_path', search_path))
        cursor.execute(claim[0], claim[1])
        if not cursor.fetchall():
            raise DownMigrationError("migration '%s' is no longer applied (changed while this task ran); nothing was "
                                     'rolled back for it' % name, migration=name)
        try:
            cursor.execute(script)
        except pg.psycopg2.Error as exc:
            # Leaving the with block rolls the whole transaction back.
            raise DownMigrationError("down script %s of migration '%s' failed, its transaction was rolled back and "
                                     'the migration is still applied: %s' % (script_path, name, pg_message(exc)),
                                     migration=name, database_message=pg_message(exc))
        cursor.execute(record[0], record[1])
    return round(time.time() - started, 3)


def roll_back(lock, plan, run_one):
    """Hold lock and roll back plan's entries in order with run_one(item) -> seconds; return what was rolled back.

    On a failure the entries already rolled back are in the exception's ``rolled_back`` attribute."""
    done = []
    try:
        with lock:
            for item in plan:
                seconds = run_one(item)
                done.append(dict(((k, v) for k, v in item.items() if k != 'expected'), duration=seconds))
    except Exception as exc:
        exc.rolled_back = done
        raise
    return done
