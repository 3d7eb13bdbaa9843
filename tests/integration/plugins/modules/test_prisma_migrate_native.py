"""prisma_migrate engine=native against the local PostgreSQL, judged by the real Prisma 6.19.3 CLI.

Compatibility is the test: whatever the native engine records, the real CLI's `migrate status` and
`migrate deploy` must read as their own, and the other way round; a history applied half by one and half by
the other stays consistent.  Two histories: the test project (tests/fixtures/prisma/app, 3 migrations) and
LiteLLM's proxy database (220 migrations, 19 with dollar-quoted blocks; tests/scripts/prisma_history.py
fetches it from PyPI, sha256-pinned).  The CLI runs offline (JS schema engine + pg adapter): it cannot apply
dollar-quoted blocks, so on the real-world history it applies only the tail after the last such migration.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

from helpers import REPO, assert_clear_failure, connect, sql

sys.path.insert(0, os.path.join(REPO, 'tests', 'scripts'))
from prisma_history import copy_project, dollar_quoted, migration_names  # noqa: E402  pylint: disable=wrong-import-position

MODULE = 'runbook.deploy.prisma_migrate'
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'prisma')
M1 = '20261101000000_create_customers'
M2 = '20261102000000_create_orders'
M3 = '20261103000000_add_order_status'
M4 = '20261104000000_backfill_orders'
LOCK_KEY = 72707369
UUID = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$')


# The Prisma CLI patched to run offline (tests/scripts/prisma_setup.py), once per session: conftest.py.
pytestmark = pytest.mark.usefixtures('prisma_offline_setup')


@pytest.fixture(scope='session')
def history():
    """LiteLLM's migration history as a Prisma project (downloaded once by bootstrap; this makes sure)."""
    done = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'scripts', 'prisma_history.py')],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, 'the real-world migration history is not available: %s' % done.stderr
    return done.stdout.strip()


@pytest.fixture
def project(tmp_path):
    return copy_project(os.path.join(FIXTURES, 'app'), str(tmp_path / 'app'))


@pytest.fixture
def db(make_db, stack):
    """db() makes an empty database and returns (name, url)."""
    def factory():
        name = make_db('native', rows=None)
        url = 'postgresql://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                               stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], name)
        return name, url
    return factory


@pytest.fixture
def native(run_module):
    def run(state, project, url, check=False, **args):
        return run_module(MODULE, check=check, state=state, engine='native', project_path=str(project), db_url=url,
                          **args)
    return run


def cli(project, url, *args):
    """The real Prisma CLI in project: (rc, output)."""
    env = dict(os.environ, DATABASE_URL=url, CHECKPOINT_DISABLE='1', PRISMA_HIDE_UPDATE_MESSAGE='1', NO_COLOR='1')
    done = subprocess.run(['node', os.path.join(REPO, 'node_modules', '.bin', 'prisma')] + list(args),
                          cwd=str(project), env=env, capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr


def assert_cli_up_to_date(project, url):
    rc, out = cli(project, url, 'migrate', 'status')
    assert rc == 0 and 'Database schema is up to date!' in out, out


def rows(stack, name):
    columns = ('id', 'checksum', 'finished_at', 'migration_name', 'logs', 'rolled_back_at', 'started_at',
               'applied_steps_count')
    found = sql(stack, name, 'SELECT %s FROM _prisma_migrations ORDER BY started_at' % ', '.join(columns))
    return [dict(zip(columns, row)) for row in found]


def file_sha256(project, name):
    with open(os.path.join(project, 'prisma', 'migrations', name, 'migration.sql'), 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def table_definition(stack, name, schema='public'):
    return sql(stack, name, "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
                            "FROM information_schema.columns WHERE table_schema = %s AND table_name = "
                            "'_prisma_migrations' ORDER BY ordinal_position", (schema,))


def add_migration(project, name, script):
    folder = os.path.join(project, 'prisma', 'migrations', name)
    os.makedirs(folder)
    with open(os.path.join(folder, 'migration.sql'), 'w') as handle:
        handle.write(script)


# -- the test project --------------------------------------------------------------------------
@pytest.mark.slow
def test_native_deploy_records_what_prisma_records_and_the_cli_agrees(native, db, project, stack):
    name, url = db()
    checked = native('deployed', project, url, check=True)
    assert checked['changed'] is True and [a['name'] for a in checked['applied']] == [M1, M2, M3]
    assert sql(stack, name, "SELECT to_regclass('_prisma_migrations')")[0][0] is None

    deployed = native('deployed', project, url)
    assert deployed['changed'] is True, deployed
    assert deployed['engine'] == 'native' and deployed['executed_commands'] == []
    assert deployed['prisma_version'] is None
    assert [a['name'] for a in deployed['applied']] == [M1, M2, M3]
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(deployed)
    recorded = rows(stack, name)
    assert [r['migration_name'] for r in recorded] == [M1, M2, M3]
    for row in recorded:
        assert UUID.match(row['id']), row['id']
        assert row['checksum'] == file_sha256(project, row['migration_name'])
        assert row['applied_steps_count'] == 1 and row['logs'] is None and row['rolled_back_at'] is None
        assert row['finished_at'] >= row['started_at']
    assert sql(stack, name, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' "
                            "AND column_name = 'status'")[0][0] == 1

    # The real CLI reads this as its own history: nothing to do, up to date.
    assert_cli_up_to_date(project, url)
    rc, out = cli(project, url, 'migrate', 'deploy')
    assert rc == 0 and 'No pending migrations to apply.' in out, out

    again = native('deployed', project, url)
    assert again['changed'] is False and again['applied'] == []
    assert len(rows(stack, name)) == 3


@pytest.mark.slow
def test_cli_then_native_then_cli_share_one_history(native, db, project, tmp_path, stack):
    """Half by one, half by the other, both ways: the table, the checksums and both readers agree."""
    # CLI first (M1), then native (M2, M3).
    name, url = db()
    first = copy_project(os.path.join(FIXTURES, 'app'), str(tmp_path / 'first'), keep=1)
    rc, out = cli(first, url, 'migrate', 'deploy')
    assert rc == 0 and M1 in out, out
    status = native('status', project, url)
    assert [e['name'] for e in status['status']['applied']] == [M1]
    assert status['status']['pending'] == [M2, M3] and status['status']['modified'] == []
    taken_over = native('deployed', project, url)
    assert [a['name'] for a in taken_over['applied']] == [M2, M3]
    assert_cli_up_to_date(project, url)

    # Native first (M1), then the CLI (M2, M3).
    other, other_url = db()
    assert [a['name'] for a in native('deployed', first, other_url)['applied']] == [M1]
    rc, out = cli(project, other_url, 'migrate', 'deploy')
    assert rc == 0 and 'All migrations have been successfully applied.' in out, out
    status = native('status', project, other_url)
    assert [e['name'] for e in status['status']['applied']] == [M1, M2, M3]
    assert status['status']['pending'] == [] and all(e['checksum_matches'] for e in status['status']['applied'])
    assert native('deployed', project, other_url)['changed'] is False

    # The table the native engine created is the one the CLI creates.
    assert table_definition(stack, other) == table_definition(stack, name)
    cli_rows, native_rows = rows(stack, name), rows(stack, other)
    assert [r['checksum'] for r in cli_rows] == [r['checksum'] for r in native_rows]
    assert [r['applied_steps_count'] for r in cli_rows] == [r['applied_steps_count'] for r in native_rows] == [1, 1, 1]


@pytest.mark.slow
def test_failed_migration_is_recorded_like_prisma_and_resolved_both_ways(native, db, project, stack):
    name, url = db()
    shutil.copytree(os.path.join(FIXTURES, 'failing_migration', M4), os.path.join(project, 'prisma', 'migrations', M4))
    failed = native('deployed', project, url)
    assert_clear_failure(failed, 'P3018', M4, 'violates foreign key constraint')
    assert failed['error']['code'] == 'P3018' and failed['error']['migration'] == M4
    assert 'orders_customer_id_fkey' in failed['error']['database_message']
    assert [a['name'] for a in failed['applied']] == [M1, M2, M3]
    row = rows(stack, name)[-1]
    assert row['migration_name'] == M4 and row['finished_at'] is None and row['rolled_back_at'] is None
    assert row['applied_steps_count'] == 0 and row['checksum'] == file_sha256(project, M4)
    assert 'Migration name: %s' % M4 in row['logs'] and 'Database error code: 23503' in row['logs']
    assert 'Database error:\nERROR: insert or update on table "orders" violates foreign key' in row['logs']
    # The whole script ran as one query (one implicit transaction), as with Prisma's native engine: the table
    # its first statement created is gone with the failed insert.
    assert sql(stack, name, "SELECT to_regclass('order_audit')")[0][0] is None

    # The CLI sees a failed migration and refuses to go on (P3009), reading the native engine's row.
    rc, out = cli(project, url, 'migrate', 'status')
    assert rc == 1 and 'have failed' in out and M4 in out, out
    rc, out = cli(project, url, 'migrate', 'deploy')
    assert rc != 0 and 'P3009' in out and M4 in out, out
    assert_clear_failure(native('deployed', project, url), 'P3009', M4)

    resolved = native('resolved', project, url, migration=M4, **{'as': 'rolled_back'})
    assert resolved['changed'] is True and resolved['resolved']['method'] == 'native'
    assert rows(stack, name)[-1]['rolled_back_at'] is not None
    again = native('resolved', project, url, migration=M4, **{'as': 'rolled_back'})
    assert again['changed'] is False

    # Fixed migration: deploy applies it again, in a new row; the CLI is up to date.
    with open(os.path.join(project, 'prisma', 'migrations', M4, 'migration.sql'), 'w') as handle:
        handle.write('CREATE TABLE "order_audit" ("id" SERIAL PRIMARY KEY, "order_id" INTEGER NOT NULL);\n')
    fixed = native('deployed', project, url)
    assert [a['name'] for a in fixed['applied']] == [M4]
    assert [(r['migration_name'], r['finished_at'] is not None) for r in rows(stack, name)][-2:] == [
        (M4, False), (M4, True)]
    assert_cli_up_to_date(project, url)

    # resolve --applied on a failed migration: failed row rolled back, a row with started_at = finished_at.
    m5 = '20261105000000_broken'
    add_migration(project, m5, 'SELECT 1;\nSELECT * FROM "no_such_table";\n')
    failed = native('deployed', project, url)
    assert_clear_failure(failed, 'P3018', m5, 'no_such_table')
    assert 'Position:' in rows(stack, name)[-1]['logs']
    applied = native('resolved', project, url, migration=m5, **{'as': 'applied'})
    assert applied['changed'] is True and applied['resolved']['method'] == 'native'
    last_two = rows(stack, name)[-2:]
    assert last_two[0]['rolled_back_at'] is not None and last_two[0]['finished_at'] is None
    assert last_two[1]['started_at'] == last_two[1]['finished_at'] and last_two[1]['logs'] == ''
    assert last_two[1]['applied_steps_count'] == 0
    assert_cli_up_to_date(project, url)


def test_dollar_quoted_blocks_and_the_advisory_lock(native, db, project, stack):
    name, url = db()
    add_migration(project, '20261104000000_functions', '''-- Dollar-quoted blocks, which Prisma's offline JS engine cannot apply.
CREATE FUNCTION touch_customer() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    NEW.name := coalesce(NEW.name, 'anonymous; with a semicolon');
    RETURN NEW;
END;
$body$;
CREATE TRIGGER customers_touch BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION touch_customer();
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM customers WHERE email = 'system@example.com') THEN
        INSERT INTO customers (email) VALUES ('system@example.com');
    END IF;
END $$;
''')
    holder = connect(stack, name)
    try:
        with holder.cursor() as cursor:
            cursor.execute('SELECT pg_advisory_lock(%s)', (LOCK_KEY,))
        started = time.time()
        blocked = native('deployed', project, url, timeout=2)
        assert_clear_failure(blocked, 'pg_advisory_lock(72707369)', 'timeout')
        assert 1.5 <= time.time() - started < 30
        assert sql(stack, name, "SELECT to_regclass('customers')")[0][0] is None
    finally:
        holder.close()

    # While it migrates, the engine holds Prisma's lock (seen from another session).
    add_migration(project, '20261105000000_slow', 'SELECT pg_sleep(1.5);\n')
    seen = []
    stop = threading.Event()

    def watch():
        watcher = connect(stack, name)
        try:
            while not stop.is_set():
                with watcher.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
                                   "AND granted", (LOCK_KEY,))
                    seen.append(cursor.fetchone()[0])
                time.sleep(0.1)
        finally:
            watcher.close()

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        deployed = native('deployed', project, url)
    finally:
        stop.set()
        thread.join()
    assert deployed['changed'] is True and len(deployed['applied']) == 5, deployed
    assert 1 in seen, 'the advisory lock 72707369 was never seen held during the deploy'
    assert sql(stack, name, "SELECT name FROM customers WHERE email = 'system@example.com'") == [
        ('anonymous; with a semicolon',)]
    assert sql(stack, name, 'SELECT count(*) FROM pg_locks WHERE locktype = %s AND objid = %s',
               ('advisory', LOCK_KEY))[0][0] == 0


def test_edited_and_missing_migrations_are_detected_as_prisma_does(native, db, project, stack):
    name, url = db()
    assert native('deployed', project, url)['changed'] is True
    folder = os.path.join(project, 'prisma', 'migrations')
    # A CRLF checkout of an applied migration is not an edit (Prisma compares both line endings) ...
    path = os.path.join(folder, M1, 'migration.sql')
    with open(path, 'rb') as handle:
        script = handle.read()
    with open(path, 'wb') as handle:
        handle.write(script.replace(b'\n', b'\r\n'))
    # ... nor is a checksum written by old Prisma versions without zero-padding (prisma-engines#1887).
    digest = hashlib.sha256(open(os.path.join(folder, M2, 'migration.sql'), 'rb').read()).digest()
    unpadded = ''.join('%x' % byte for byte in bytearray(digest))
    sql(stack, name, 'UPDATE _prisma_migrations SET checksum = %s WHERE migration_name = %s', (unpadded, M2))
    status = native('status', project, url)
    assert status['status']['modified'] == [], status['status']
    assert not status.get('warnings')

    # A real edit is detected and warned about; like prisma migrate deploy, it does not stop a deployment.
    with open(os.path.join(folder, M3, 'migration.sql'), 'a') as handle:
        handle.write('-- edited after it was applied\n')
    shutil.rmtree(os.path.join(folder, M2))
    deployed = native('deployed', project, url)
    assert deployed['changed'] is False and not deployed.get('failed')
    assert deployed['status']['modified'] == [M3]
    assert deployed['status']['not_in_folder'] == [M2]
    warnings = ' '.join(deployed.get('warnings', []))
    assert M3 in warnings and 'checksum differs' in warnings and M2 in warnings


def test_non_empty_schema_other_provider_and_other_schema(native, db, project, stack):
    name, url = db()
    sql(stack, name, 'CREATE TABLE legacy (id int)')
    refused = native('deployed', project, url)
    assert_clear_failure(refused, 'P3005', 'not empty', 'baseline')
    assert sql(stack, name, "SELECT to_regclass('_prisma_migrations')")[0][0] is None

    # Baselining as Prisma documents it: resolve --applied on a pending migration creates the table.
    baselined = native('resolved', project, url, migration=M1, **{'as': 'applied'})
    assert baselined['changed'] is True
    assert [r['migration_name'] for r in rows(stack, name)] == [M1]
    assert_clear_failure(native('resolved', project, url, migration='20261199000000_nope', **{'as': 'applied'}),
                         '20261199000000_nope')

    lock_file = os.path.join(project, 'prisma', 'migrations', 'migration_lock.toml')
    with open(lock_file, 'w') as handle:
        handle.write('provider = "mysql"\n')
    assert_clear_failure(native('deployed', project, url), 'P3019', 'mysql')
    with open(lock_file, 'w') as handle:
        handle.write('provider = "postgresql"\n')

    # Another schema: created when missing, search_path set to it, the table lives there.
    other, other_url = db()
    deployed = native('deployed', project, other_url, db_schema='tenant_a')
    assert deployed['changed'] is True and len(deployed['applied']) == 3
    assert sql(stack, other, "SELECT to_regclass('tenant_a._prisma_migrations') IS NOT NULL, "
                             "to_regclass('tenant_a.orders') IS NOT NULL, to_regclass('public.orders')")[0] == (
        True, True, None)


def test_cli_only_options_are_refused_with_the_native_engine(native, db, project):
    dummy, url = db()
    assert_clear_failure(native('deployed', project, url, executable='/usr/bin/prisma'), 'executable', 'engine=cli')


# -- a large real-world history ----------------------------------------------------------------

@pytest.mark.slow
def test_real_world_history_from_empty_and_shared_with_the_cli(native, db, history, tmp_path, stack):
    names = migration_names(history)
    with_dollars = [n for n in names if dollar_quoted(history, n)]
    assert len(names) > 100 and len(with_dollars) >= 10, (len(names), len(with_dollars))

    # From empty, natively: every migration, dollar-quoted blocks included; the real CLI agrees.
    name, url = db()
    deployed = native('deployed', history, url)
    assert deployed['changed'] is True and [a['name'] for a in deployed['applied']] == names
    assert deployed['status']['pending'] == [] and deployed['status']['failed'] == []
    assert all(r['applied_steps_count'] == 1 for r in rows(stack, name))
    assert_cli_up_to_date(history, url)
    assert native('deployed', history, url)['changed'] is False

    # Half and half: native up to the last dollar-quoted migration, the CLI applies the tail, both agree.
    cut = names.index(with_dollars[-1]) + 1
    assert cut < len(names), 'the history ends with a dollar-quoted migration; nothing left for the CLI'
    partial = copy_project(history, str(tmp_path / 'partial'), keep=cut)
    shared, shared_url = db()
    assert len(native('deployed', partial, shared_url)['applied']) == cut
    rc, out = cli(history, shared_url, 'migrate', 'deploy')
    assert rc == 0 and 'All migrations have been successfully applied.' in out, out
    status = native('status', history, shared_url)
    assert [e['name'] for e in status['status']['applied']] == names
    assert all(e['checksum_matches'] for e in status['status']['applied'])
    assert native('deployed', history, shared_url)['changed'] is False
    assert_cli_up_to_date(history, shared_url)
    # Same schema either way: the database the CLI finished equals the one the engine did alone.
    schema_of = ("SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                 "WHERE table_schema = 'public' AND table_name <> '_prisma_migrations' ORDER BY 1, 2")
    assert sql(stack, shared, schema_of) == sql(stack, name, schema_of)
    assert uuid.UUID(rows(stack, shared)[-1]['id'])


@pytest.mark.slow
def test_down_path_then_native_deploy_with_the_cli_watching(native, db, project, stack):
    """The module's down path (down.sql) on a natively deployed history reads to the CLI as Prisma's own state."""
    name, url = db()
    assert native('deployed', project, url)['changed'] is True
    rolled = native('rolled_back', project, url, steps=1)
    assert [r['name'] for r in rolled['rolled_back']] == [M3]
    assert sql(stack, name, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' "
                            "AND column_name = 'status'")[0][0] == 0
    # Prisma's own status (diagnose_migration_history) counts a rolled-back row as present, so it still says "up
    # to date", while its migrate deploy (apply_migrations) skips only rows with rolled_back_at unset and applies
    # the migration again: the module's status follows deploy and lists it pending.
    assert_cli_up_to_date(project, url)
    assert native('status', project, url)['status']['pending'] == [M3]
    again = native('deployed', project, url)
    assert [a['name'] for a in again['applied']] == [M3]
    assert [(r['migration_name'], r['rolled_back_at'] is None) for r in rows(stack, name)] == [
        (M1, True), (M2, True), (M3, False), (M3, True)]
    assert_cli_up_to_date(project, url)
