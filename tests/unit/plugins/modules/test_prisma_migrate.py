"""prisma_migrate's decisions, with the database and the CLI replaced at their boundary (pg.connect, read_rows,
PrismaCli.run); the real thing runs in tests/integration/plugins/modules/test_prisma_migrate.py."""

from __future__ import annotations

import datetime
import hashlib

import pytest


from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils import prisma
from ansible_collections.runbook.deploy.plugins.modules import prisma_migrate

T0 = datetime.datetime(2026, 11, 22, 14, 0, 0, tzinfo=datetime.timezone.utc)
SELECT_1 = hashlib.sha256(b'SELECT 1;').hexdigest()
JS_ENGINE_FAILURE = ('Error: external connector error\nForeign key constraint failed: orders_customer_id_fkey\n'
                     '   0: sql_schema_connector::apply_migration::apply_script\n'
                     '           with migration_name="c"\n')


class Closed(object):
    closed = False

    def close(self):
        self.closed = True


@pytest.fixture
def project(tmp_path):
    for name in ('a', 'b', 'c'):
        folder = tmp_path / 'prisma' / 'migrations' / name
        folder.mkdir(parents=True)
        (folder / 'migration.sql').write_text('SELECT 1;')
        if name != 'b':
            (folder / 'down.sql').write_text('SELECT 1;')
    (tmp_path / 'prisma' / 'schema.prisma').write_text('')
    return tmp_path


@pytest.fixture
def module_run(monkeypatch, project, run_main):
    """module_run(rows_sequence, check=False, **args) -> result; each read of the table takes the next rows."""
    monkeypatch.setattr(pg, 'connect', lambda conn, **kw: Closed())
    monkeypatch.setattr(prisma.PrismaCli, 'check', lambda self: setattr(self, 'prefix', ['prisma']))
    calls = []

    def run(rows_sequence, check=False, cli_output=(0, 'All migrations have been successfully applied.'), **args):
        reads = list(rows_sequence)
        monkeypatch.setattr(prisma, 'read_rows', lambda connection, schema: reads.pop(0) if len(reads) > 1 else reads[0])

        def fake_run(self, argv, step, extra_env=None):
            calls.append(argv)
            return cli_output[0], cli_output[1], 11.0
        monkeypatch.setattr(prisma.PrismaCli, 'run', fake_run)
        args.setdefault('project_path', str(project))
        args.setdefault('db_url', 'postgresql://u:secret@h/db')
        if check:
            args['_ansible_check_mode'] = True
        result = run_main(prisma_migrate.main, args)
        result['cli_calls'] = list(calls)
        return result

    return run


def row(name, started, finished=True, rolled_back=False, logs=None):
    return dict(id=name, checksum=SELECT_1, migration_name=name, logs=logs, applied_steps_count=1,
                started_at=T0 + datetime.timedelta(seconds=started),
                finished_at=T0 + datetime.timedelta(seconds=started + 1) if finished else None,
                rolled_back_at=T0 if rolled_back else None)


def test_check_mode_deploy_returns_the_pending_list_without_running_prisma(module_run):
    result = module_run([[row('a', 0)]], check=True, state='deployed')
    assert result['changed'] is True
    assert [m['name'] for m in result['applied']] == ['b', 'c']
    assert result['status']['pending'] == ['b', 'c']
    assert result['cli_calls'] == []


def test_nothing_pending_runs_nothing_and_changes_nothing(module_run):
    result = module_run([[row('a', 0), row('b', 2), row('c', 4)]], state='deployed')
    assert (result['changed'], result['applied'], result['cli_calls']) == (False, [], [])


def test_a_failed_migration_blocks_deploy_with_p3009_before_the_cli(module_run):
    result = module_run([[row('a', 0), row('b', 2, finished=False, logs='relation "x" already exists')]],
                        state='deployed')
    assert result['failed'] and result['error']['code'] == 'P3009'
    assert "migration 'b'" in result['msg'] and 'relation "x" already exists' in result['msg']
    assert result['cli_calls'] == []


def test_js_engine_failure_is_reported_as_p3018_with_name_and_database_message(module_run):
    before = [row('a', 0)]
    after = [row('a', 0), row('b', 2), row('c', 4, finished=False, logs=JS_ENGINE_FAILURE[len('Error: '):])]
    result = module_run([before, after], state='deployed', cli_output=(1, JS_ENGINE_FAILURE))
    assert result["failed"] and result["changed"] is True, result
    assert result['error']['code'] == 'P3018' and result['error']['migration'] == 'c'
    assert result['error']['database_message'] == 'Foreign key constraint failed: orders_customer_id_fkey'
    assert [m['name'] for m in result['applied']] == ['b']
    assert "migration 'c' failed to apply" in result['msg'] and 'Applied before it: b.' in result['msg']


def test_deploy_success_with_migrations_still_pending_is_an_error(module_run):
    result = module_run([[]], state='deployed')
    assert result['failed'] and 'still lists 3 pending' in result['msg'] and result['changed'] is False
    said_applied = 'The following migration(s) have been applied:\n...\nAll migrations have been successfully applied.'
    result = module_run([[]], state='deployed', cli_output=(0, said_applied))
    assert result['failed'] and 'still lists 3 pending' in result['msg'] and 'driver adapter' in result['msg']
    assert result['changed'] is True  # Prisma applied them somewhere: report it


def test_resolving_an_applied_migration_as_rolled_back_points_to_the_down_path(module_run):
    result = module_run([[row('a', 0)]], state='resolved', migration='a', **{'as': 'rolled_back'})
    assert result['failed'] and result['error']['code'] == 'P3012' and 'state=rolled_back' in result['msg']


def test_resolving_a_never_applied_migration_as_rolled_back_is_p3011(module_run):
    result = module_run([[row('a', 0)]], state='resolved', migration='b', **{'as': 'rolled_back'})
    assert result['failed'] and result['error']['code'] == 'P3011'


def test_roll_back_without_a_down_script_is_refused_before_anything_runs(module_run):
    result = module_run([[row('a', 0), row('b', 2), row('c', 4)]], state='rolled_back', migration='b')
    assert result['failed'] and result['changed'] is False
    assert 'no down script for b (expected' in result['msg'] and 'Nothing was rolled back' in result['msg']


def test_check_mode_roll_back_lists_newest_first(module_run):
    result = module_run([[row('a', 0), row('b', 2), row('c', 4)]], check=True, state='rolled_back', steps=1)
    assert result['changed'] is True
    assert [(r['name'], r['duration']) for r in result['rolled_back']] == [('c', None)]


@pytest.mark.parametrize('args,fragment', [
    (dict(state='resolved', migration='a'), 'state is resolved but all of the following are missing: as'),
    (dict(state='rolled_back'), 'steps, migration'),
    (dict(state='rolled_back', steps=1, migration='a'), 'mutually exclusive'),
    (dict(state='deployed', steps=1), 'steps is only used with state=rolled_back'),
    (dict(state='status', down_scripts={'a': 'x.sql'}), 'down_scripts is only used with state=rolled_back'),
])
def test_option_combinations_are_checked(module_run, args, fragment):
    result = module_run([[]], **args)
    assert result['failed'] and fragment in result['msg'], result['msg']


def test_results_never_carry_the_url_password(module_run):
    result = module_run([[row('a', 0)]], state='status')
    assert 'secret' not in repr(result)


def test_resolving_a_pending_migration_as_applied_baselines_it_with_the_cli(module_run):
    result = module_run([[row('a', 0)], [row('a', 0), row('b', 2)]], state='resolved', migration='b',
                        cli_output=(0, 'Migration b marked as applied.'), **{'as': 'applied'})
    assert result['changed'] is True
    assert result['resolved'] == {'migration': 'b', 'as': 'applied', 'method': 'cli'}
    assert result['cli_calls'] == [['prisma', 'migrate', 'resolve', '--applied', 'b']]


def test_a_resolve_the_table_does_not_show_is_an_error(module_run):
    result = module_run([[row('a', 0), row('b', 2, finished=False)]], state='resolved', migration='b',
                        cli_output=(0, 'Migration b marked as applied.'), **{'as': 'applied'})
    assert result['failed'] and 'is not recorded as applied' in result['msg']
