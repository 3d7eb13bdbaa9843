"""runbook.deploy.prisma_migrate against the local PostgreSQL with the real Prisma 6.19.3 CLI.

The test project (tests/fixtures/prisma/app) is copied per test, with node_modules linked to the repository's.
It uses Prisma's offline JS schema engine, which needs the @prisma/adapter-pg patch for prisma/orm#27403
(tests/scripts/prisma_setup.py, applied once per session below; idempotent).  Each `migrate deploy` takes ~11 s
here, so the tests share CLI runs between several checks.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from helpers import REPO, ProcessWatcher, assert_clear_failure, connect, sql

MODULE = 'runbook.deploy.prisma_migrate'
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'prisma')
M1 = '20261101000000_create_customers'
M2 = '20261102000000_create_orders'
M3 = '20261103000000_add_order_status'
M4 = '20261104000000_backfill_orders'


# The Prisma CLI patched to run offline (tests/scripts/prisma_setup.py), once per session: conftest.py.
pytestmark = pytest.mark.usefixtures('prisma_offline_setup')


@pytest.fixture
def project(tmp_path):
    """A copy of the test project, its node_modules linked to the repository's (the CLI it pins)."""
    path = tmp_path / 'app'
    shutil.copytree(os.path.join(FIXTURES, 'app'), str(path))
    os.symlink(os.path.join(REPO, 'node_modules'), str(path / 'node_modules'))
    return path


def add_failing_migration(project):
    shutil.copytree(os.path.join(FIXTURES, 'failing_migration', M4), str(project / 'prisma' / 'migrations' / M4))


@pytest.fixture
def prisma(run_module, make_db, stack, project):
    """prisma(state=..., **args) runs the module on a fresh database of its own; .db and .url name it."""
    db = make_db('prisma', rows=None)
    url = 'postgresql://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                           stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)

    def run(state, check=False, **args):
        args.setdefault('project_path', str(project))
        args.setdefault('db_url', url)
        return run_module(MODULE, check=check, state=state, **args)

    run.db = db
    run.url = url
    run.project = project
    return run


def table_rows(stack, db):
    return sql(stack, db, 'SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL '
                          'FROM _prisma_migrations ORDER BY started_at')


def relation_exists(stack, db, name):
    return sql(stack, db, 'SELECT to_regclass(%s) IS NOT NULL', (name,))[0][0]


def column_exists(stack, db, table, column):
    return bool(sql(stack, db, 'SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s',
                    (table, column)))


def names(entries):
    return [e['name'] for e in entries]


def home_prisma_state():
    """Files under ~/.cache/prisma and ~/.prisma with their mtimes: the tests must write nothing there."""
    found = {}
    for root in (os.path.expanduser('~/.cache/prisma'), os.path.expanduser('~/.prisma')):
        for dirpath, dummy, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                found[path] = os.stat(path).st_mtime
    return found


# -- the real CLI -------------------------------------------------------------------------------
@pytest.mark.slow
def test_pending_deployed_then_nothing_pending(prisma, stack):
    home_before = home_prisma_state()
    status = prisma('status')
    assert status['changed'] is False and status['executed_commands'] == []
    assert status['status']['table_exists'] is False
    assert status['status']['pending'] == [M1, M2, M3]
    assert status['status']['applied'] == [] and status['status']['failed'] == []

    checked = prisma('deployed', check=True)
    assert checked['changed'] is True
    assert names(checked['applied']) == [M1, M2, M3]
    assert checked['status']['pending'] == [M1, M2, M3]
    assert checked['executed_commands'] == []
    assert not relation_exists(stack, prisma.db, '_prisma_migrations')

    password = stack['RUNBOOK_PG_PASSWORD']
    with ProcessWatcher(str(prisma.project), 'migrate') as watcher:
        deployed = prisma('deployed')
    assert watcher.seen, 'the Prisma CLI was never observed running; its command line could not be checked'
    assert all(password.encode() not in cmdline for cmdline in watcher.seen.values())
    assert password not in json.dumps(deployed)
    assert deployed['changed'] is True, deployed
    assert names(deployed['applied']) == [M1, M2, M3]
    assert all(isinstance(e['duration'], float) and e['duration'] >= 0 for e in deployed['applied'])
    assert deployed['prisma_version'] == '6.19.3'
    assert len(deployed['executed_commands']) == 1 and 'migrate deploy' in deployed['executed_commands'][0]
    assert deployed['status']['pending'] == []
    assert [r[0] for r in table_rows(stack, prisma.db)] == [M1, M2, M3]
    assert column_exists(stack, prisma.db, 'orders', 'status')

    again = prisma('deployed')
    assert again['changed'] is False and again['applied'] == [] and again['executed_commands'] == []
    status = prisma('status')
    assert names(status['status']['applied']) == [M1, M2, M3]
    assert status['status']['pending'] == [] and status['status']['failed'] == []
    assert all(e['checksum_matches'] for e in status['status']['applied'])
    assert home_prisma_state() == home_before, 'Prisma wrote into the home directory'


@pytest.mark.slow
def test_failing_migration_then_resolve_both_ways(prisma, stack):
    add_failing_migration(prisma.project)
    failed = prisma('deployed')
    assert_clear_failure(failed, 'P3018', M4, 'orders_customer_id_fkey', 'state=resolved')
    assert failed['error']['code'] == 'P3018'
    assert failed['error']['migration'] == M4
    assert 'orders_customer_id_fkey' in failed['error']['database_message']
    assert failed['changed'] is True
    assert names(failed['applied']) == [M1, M2, M3]
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(failed)
    # The database is left as Prisma leaves it: the first statement ran, the migration is recorded as failed.
    assert relation_exists(stack, prisma.db, 'order_audit')
    assert table_rows(stack, prisma.db)[-1] == (M4, False, False)

    status = prisma('status')
    assert names(status['status']['failed']) == [M4]
    assert 'orders_customer_id_fkey' in status['status']['failed'][0]['database_message']
    assert status['status']['pending'] == []

    blocked = prisma('deployed')
    assert_clear_failure(blocked, 'P3009', M4)
    assert blocked['executed_commands'] == []
    refused = prisma('rolled_back', steps=1)
    assert_clear_failure(refused, 'P3009', M4)

    not_failed = prisma('resolved', migration=M3, **{'as': 'rolled_back'})
    assert_clear_failure(not_failed, 'P3012', M3, 'state=rolled_back')

    # Undo its partial change by hand, then record it rolled back (the CLI needs the native engine: see notes).
    sql(stack, prisma.db, 'DROP TABLE order_audit')
    checked = prisma('resolved', check=True, migration=M4, **{'as': 'rolled_back'})
    assert checked['changed'] is True and checked['resolved']['method'] == 'check_mode'
    assert table_rows(stack, prisma.db)[-1] == (M4, False, False)
    resolved = prisma('resolved', migration=M4, **{'as': 'rolled_back'})
    assert resolved['changed'] is True, resolved
    assert resolved['resolved'] == {'migration': M4, 'as': 'rolled_back', 'method': 'direct'}
    assert any('native schema engine' in w for w in resolved.get('warnings', []))
    assert 'resolve --rolled-back' in resolved['executed_commands'][0]
    assert resolved['status']['failed'] == [] and resolved['status']['pending'] == [M4]
    assert table_rows(stack, prisma.db)[-1] == (M4, False, True)
    again = prisma('resolved', migration=M4, **{'as': 'rolled_back'})
    assert again['changed'] is False and again['executed_commands'] == []

    # migrate deploy retries it (and it fails again); a hotfix by hand, then record it applied with the CLI.
    failed_again = prisma('deployed')
    assert_clear_failure(failed_again, 'P3018', M4)
    assert failed_again['applied'] == []
    sql(stack, prisma.db, "INSERT INTO customers (id, email) VALUES (424242, 'hotfix@example.com');"
                          'INSERT INTO orders (customer_id, total) VALUES (424242, 1.00)')
    applied = prisma('resolved', migration=M4, **{'as': 'applied'})
    assert applied['changed'] is True, applied
    assert applied['resolved'] == {'migration': M4, 'as': 'applied', 'method': 'cli'}
    assert names(applied['status']['applied'])[-1] == M4
    assert applied['status']['failed'] == [] and applied['status']['pending'] == []
    again = prisma('resolved', migration=M4, **{'as': 'applied'})
    assert again['changed'] is False and again['executed_commands'] == []


@pytest.mark.slow
def test_roll_back_with_down_scripts_then_deploy_applies_again(prisma, stack, tmp_path):
    assert prisma('deployed')['changed'] is True

    checked = prisma('rolled_back', check=True, steps=2)
    assert checked['changed'] is True
    assert names(checked['rolled_back']) == [M3, M2]
    assert column_exists(stack, prisma.db, 'orders', 'status')

    # A missing down script is refused before anything is rolled back.
    down2 = prisma.project / 'prisma' / 'migrations' / M2 / 'down.sql'
    saved = down2.read_text()
    down2.unlink()
    refused = prisma('rolled_back', migration=M2)
    assert_clear_failure(refused, 'no down script', M2, 'down.sql', 'Nothing was rolled back')
    assert refused['changed'] is False
    assert column_exists(stack, prisma.db, 'orders', 'status')
    down2.write_text(saved)

    # A failing down script: its transaction is rolled back, the migration stays applied.
    broken = tmp_path / 'broken_down.sql'
    broken.write_text('DROP INDEX "orders_status_idx";\nSELECT no_such_function();\n')
    failed = prisma('rolled_back', steps=1, down_scripts={M3: str(broken)})
    assert_clear_failure(failed, M3, 'no_such_function', 'still applied')
    assert failed['error']['migration'] == M3
    assert relation_exists(stack, prisma.db, 'orders_status_idx')
    assert names(failed['status']['applied']) == [M1, M2, M3]

    # While another migration run holds Prisma's lock, nothing runs.
    holder = connect(stack, prisma.db)
    try:
        with holder.cursor() as cursor:
            cursor.execute('SELECT pg_advisory_lock(72707369)')
        locked = prisma('rolled_back', steps=1, timeout=1)
        assert_clear_failure(locked, 'pg_advisory_lock(72707369)')
        assert column_exists(stack, prisma.db, 'orders', 'status')
    finally:
        holder.close()

    # Down to M2: M3's down.sql (a DO $$ block) then M2's, newest first, each recorded as rolled back.
    rolled = prisma('rolled_back', migration=M2)
    assert rolled['changed'] is True, rolled
    assert names(rolled['rolled_back']) == [M3, M2]
    assert all(r['down_script'].endswith('/down.sql') and r['duration'] >= 0 for r in rolled['rolled_back'])
    assert rolled['executed_commands'] == []
    assert not relation_exists(stack, prisma.db, 'orders')
    assert not column_exists(stack, prisma.db, 'customers', 'name')
    assert rolled['status']['pending'] == [M2, M3]
    assert names(rolled['status']['applied']) == [M1]
    again = prisma('rolled_back', migration=M2)
    assert again['changed'] is False and again['rolled_back'] == []

    # migrate deploy applies them again.
    redeployed = prisma('deployed')
    assert redeployed['changed'] is True, redeployed
    assert names(redeployed['applied']) == [M2, M3]
    assert column_exists(stack, prisma.db, 'orders', 'status')
    assert redeployed['status']['pending'] == []
    assert [r for r in table_rows(stack, prisma.db) if not r[2]] == [(M1, True, False), (M2, True, False),
                                                                     (M3, True, False)]

    one = prisma('rolled_back', steps=1)
    assert names(one['rolled_back']) == [M3]
    assert not column_exists(stack, prisma.db, 'orders', 'status')
    assert one['status']['pending'] == [M3]


# -- bad inputs -----------------------------------------------------------------------------------
def fake_prisma(tmp_path, body):
    """An executable standing in for a broken Prisma CLI (not a double of Prisma: it misbehaves on purpose)."""
    path = tmp_path / 'fake-prisma'
    path.write_text('#!/bin/sh\n# Stands in for a broken Prisma CLI in test_prisma_migrate.py.\n%s\n' % body)
    path.chmod(0o755)
    return str(path)


def test_missing_project_path_is_a_clear_error(prisma, tmp_path):
    result = prisma('status', project_path=str(tmp_path / 'nosuch'))
    assert_clear_failure(result, 'project_path', 'nosuch', 'does not exist')


def test_project_without_prisma_cli_is_a_clear_error(prisma):
    os.unlink(str(prisma.project / 'node_modules'))
    result = prisma('deployed')
    assert_clear_failure(result, 'no Prisma CLI at', 'node_modules/.bin/prisma', 'npm ci', 'executable')


def test_missing_node_is_a_clear_error(prisma, tmp_path):
    result = prisma('deployed', node_executable=str(tmp_path / 'no-node'))
    assert_clear_failure(result, 'node_executable', 'no-node', 'Node.js')


def test_unreachable_database_is_a_clear_error(prisma, stack):
    url = 'postgresql://%s:%s@127.0.0.1:1/nosuch' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'])
    result = prisma('status', db_url=url, connect_timeout=2)
    assert_clear_failure(result, 'could not connect', '127.0.0.1:1', 'login_host')
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(result)


def test_malformed_db_url_is_a_clear_error(prisma):
    result = prisma('status', db_url='mysql://u:secretpw@h/db')
    assert_clear_failure(result, 'db_url must start with postgres')
    assert 'secretpw' not in json.dumps(result)


def test_unknown_migration_names_are_clear_errors(prisma):
    resolved = prisma('resolved', migration='20261199_nosuch', **{'as': 'applied'})
    assert_clear_failure(resolved, "unknown migration '20261199_nosuch'", M3)
    rolled = prisma('rolled_back', migration='20261199_nosuch')
    assert_clear_failure(rolled, "unknown migration '20261199_nosuch'")
    scripts = prisma('rolled_back', steps=1, down_scripts={'nosuch': '/tmp/x.sql'})
    assert_clear_failure(scripts, 'down_scripts', "unknown migration 'nosuch'")


def test_malformed_cli_output_is_a_clear_error(prisma, tmp_path, stack):
    junk = fake_prisma(tmp_path, 'echo "{not json, not prisma"\nexit 0')
    result = prisma('deployed', executable=junk)
    assert_clear_failure(result, 'exited 0 but its output does not say', 'not prisma')
    garbage = fake_prisma(tmp_path, 'echo "segmentation fault in something" >&2\nexit 3')
    result = prisma('deployed', executable=garbage)
    assert_clear_failure(result, 'exit code 3', 'without a Prisma error', 'segmentation fault')
    unmanaged = fake_prisma(tmp_path, 'printf "Error: P3005\\n\\nThe database schema is not empty.\\n" >&2\nexit 1')
    result = prisma('deployed', executable=unmanaged)
    assert_clear_failure(result, 'P3005', 'The database schema is not empty')
    assert result['error']['code'] == 'P3005'


def test_url_reaches_the_cli_only_through_its_environment(prisma, tmp_path, stack):
    record = tmp_path / 'seen'
    spy = fake_prisma(tmp_path, 'echo "$@" > %s\nenv | grep -c "^DATABASE_URL=postgresql://" >> %s\n'
                                'echo "No pending migrations to apply."' % (record, record))
    result = prisma('deployed', executable=spy)
    argv_line, env_count = record.read_text().splitlines()
    assert argv_line == 'migrate deploy'
    assert env_count == '1'
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(result)
    # It said "applied" yet the table still lists everything pending: the module does not believe it.
    assert_clear_failure(result, 'still lists 3 pending', 'migrations_path')


def test_cli_timeout_is_a_clear_error(prisma, tmp_path):
    slow = fake_prisma(tmp_path, 'sleep 30')
    started = time.time()
    result = prisma('deployed', executable=slow, timeout=1)
    assert_clear_failure(result, 'timed out after 1 seconds')
    assert time.time() - started < 20


def test_empty_or_missing_migrations_folder_fails_naming_migrations_path(prisma, tmp_path):
    """A folder without migrations is nearly always a wrong path: no "nothing pending" (issue 15, item 10)."""
    empty = tmp_path / 'empty_migrations'
    empty.mkdir()
    (empty / 'migration_lock.toml').write_text('provider = "postgresql"\n')
    missing = tmp_path / 'no_such_migrations'
    for state in ('status', 'deployed'):
        for folder in (empty, missing):
            result = prisma(state, migrations_path=str(folder))
            assert_clear_failure(result, 'migrations_path', str(folder), 'allow_empty')
            assert result['executed_commands'] == []
    # The default folder (beside the schema) emptied: the message names it and the option too.
    default = prisma.project / 'prisma' / 'migrations'
    shutil.rmtree(str(default))
    default.mkdir()
    assert_clear_failure(prisma('deployed'), 'migrations_path', str(default), 'no migrations')
    # A brand-new project opts out: nothing pending, nothing run, no change.
    for folder in (empty, missing):
        status = prisma('status', migrations_path=str(folder), allow_empty=True)
        assert not status.get('failed'), status
        assert status['status']['pending'] == [] and status['status']['applied'] == []
        deployed = prisma('deployed', migrations_path=str(folder), allow_empty=True)
        assert not deployed.get('failed'), deployed
        assert deployed['changed'] is False and deployed['applied'] == [] and deployed['executed_commands'] == []


def test_require_down_scripts_refuses_before_applying_anything(prisma, stack):
    """Runbook 000 item 3, "rollback migrations prepared": a pending migration without its down.sql stops the
    deployment before anything is applied; with every down.sql there, it deploys."""
    (prisma.project / 'prisma' / 'migrations' / M2 / 'down.sql').unlink()
    without = [M2]
    refused = prisma('deployed', engine='native', require_down_scripts=True)
    assert_clear_failure(refused, 'require_down_scripts: no down script for the pending migration(s) %s' % without[0],
                         'nothing was applied')
    assert not relation_exists(stack, prisma.db, '_prisma_migrations')
    for name in without:
        (prisma.project / 'prisma' / 'migrations' / name / 'down.sql').write_text('SELECT 1;\n')
    deployed = prisma('deployed', engine='native', require_down_scripts=True)
    assert deployed['changed'] is True, deployed
