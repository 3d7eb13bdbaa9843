"""Prisma Migrate state, URLs and CLI output (plugins/module_utils/prisma.py)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import prisma
from ansible_collections.runbook.deploy.plugins.module_utils.command import CommandRunner

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 22, 14, 0, 0, tzinfo=UTC)

# What the native schema engine prints for a failed migration (user-facing-errors, P3018).
NATIVE_P3018 = """Prisma schema loaded from prisma/schema.prisma
Datasource "db": PostgreSQL database "app", schema "public" at "db:5432"

4 migrations found in prisma/migrations

Applying migration `20261104000000_backfill_orders`
Error: P3018

A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read more about \
how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve

Migration name: 20261104000000_backfill_orders

Database error code: 23503

Database error:
ERROR: insert or update on table "orders" violates foreign key constraint "orders_customer_id_fkey"
DETAIL: Key (customer_id)=(424242) is not present in table "customers".

DbError { severity: Error, parsed_severity: Some(Error), code: SqlState(E23503) }
"""

# What the offline JS engine (driver adapter) printed here for the same migration (Prisma 6.19.3).
JS_ENGINE_FAILURE = """Error: external connector error
Foreign key constraint failed: orders_customer_id_fkey
   0: sql_schema_connector::apply_migration::apply_script
           with migration_name="20261104000000_backfill_orders"
             at schema-engine/connectors/sql-schema-connector/src/apply_migration.rs:113
   1: schema_commands::commands::apply_migrations::Applying migration
           with migration_name="20261104000000_backfill_orders"
             at schema-engine/commands/src/commands/apply_migrations.rs:95
"""

P3009 = """Error: P3009

migrate found failed migrations in the target database, new migrations will not be applied. Read more about how to \
resolve migration issues in a production database: https://pris.ly/d/migrate-resolve
The `20261104000000_backfill_orders` migration started at 2026-11-22 14:21:19.535 UTC failed
"""


def row(name, started=0, finished=1, rolled_back=None, checksum='c', logs=None):
    return dict(id=name + str(started), checksum=checksum, migration_name=name, logs=logs, applied_steps_count=1,
                started_at=T0 + datetime.timedelta(seconds=started),
                finished_at=None if finished is None else T0 + datetime.timedelta(seconds=finished),
                rolled_back_at=None if rolled_back is None else T0 + datetime.timedelta(seconds=rolled_back))


def local(*names):
    return [dict(name=n, checksum='c', path='/p/' + n, down_script='/p/%s/down.sql' % n) for n in names]


# -- URLs ------------------------------------------------------------------------------------------
def test_prisma_only_url_parameters_are_kept_apart():
    url, extra = prisma.split_url('postgresql://u:p@h:5/db?schema=app&sslmode=require&connection_limit=5')
    assert url == 'postgresql://u:p@h:5/db?sslmode=require'
    assert extra == {'schema': 'app', 'connection_limit': '5'}


def test_the_url_for_prisma_quotes_credentials_and_keeps_prisma_parameters():
    conn = dict(user='app@corp', password='p:ss/w@rd', host='db.internal', port=6543, dbname='app db',
                sslmode='require', connect_timeout=10)
    url = prisma.build_url(conn, {'schema': 'sales'})
    assert url == ('postgresql://app%40corp:p%3Ass%2Fw%40rd@db.internal:6543/app%20db'
                   '?sslmode=require&connect_timeout=10&schema=sales')
    socket = prisma.build_url(dict(user='postgres', host='/var/run/postgresql', port=5432, dbname='app'), {})
    assert socket == 'postgresql://postgres@localhost:5432/app?host=%2Fvar%2Frun%2Fpostgresql'


def test_connection_options_merge_login_options_over_the_url():
    params = dict(db_url='postgresql://u:secret@h:7000/app?schema=s', login_port=7001, db=None, login_user=None,
                  login_password=None, login_host=None, login_unix_socket=None, ssl_mode=None, ca_cert=None,
                  connect_timeout=5)
    conn, extra = prisma.connection_options(params)
    assert (conn['port'], conn['password'], conn['dbname'], extra) == (7001, 'secret', 'app', {'schema': 's'})


# -- the folder ------------------------------------------------------------------------------------
def test_local_migrations_are_sorted_with_checksums_and_down_scripts(tmp_path):
    for name in ('20261102_b', '20261101_a'):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'migration.sql').write_bytes(b'CREATE TABLE %s ();\n' % name.encode())
    (tmp_path / '20261101_a' / 'down.sql').write_text('DROP TABLE x;')
    (tmp_path / 'migration_lock.toml').write_text('provider = "postgresql"')
    (tmp_path / 'notes').mkdir()
    found = prisma.local_migrations(str(tmp_path))
    assert [m['name'] for m in found] == ['20261101_a', '20261102_b']
    assert found[0]['checksum'] == hashlib.sha256(b'CREATE TABLE 20261101_a ();\n').hexdigest()
    assert found[0]['down_script'].endswith('20261101_a/down.sql') and found[1]['down_script'] is None


def test_a_missing_migrations_folder_names_the_option(tmp_path):
    with pytest.raises(prisma.PrismaError, match='migrations_path'):
        prisma.local_migrations(str(tmp_path / 'nosuch'))


def test_the_migrations_folder_follows_the_schema(tmp_path):
    with pytest.raises(prisma.PrismaError, match='no Prisma schema found'):
        prisma.default_migrations_path(str(tmp_path), None)
    (tmp_path / 'prisma').mkdir()
    (tmp_path / 'prisma' / 'schema.prisma').write_text('')
    assert prisma.default_migrations_path(str(tmp_path), None) == str(tmp_path / 'prisma' / 'migrations')
    (tmp_path / 'package.json').write_text(json.dumps({'prisma': {'schema': 'db/schema.prisma'}}))
    assert prisma.default_migrations_path(str(tmp_path), None) == str(tmp_path / 'db' / 'migrations')
    assert prisma.default_migrations_path(str(tmp_path), '/x/s.prisma') == '/x/migrations'


# -- classification --------------------------------------------------------------------------------
def test_status_without_the_table_is_all_pending():
    status = prisma.classify(local('a', 'b'), None)
    assert status['table_exists'] is False
    assert status['pending'] == ['a', 'b'] and status['applied'] == [] and status['failed'] == []


def test_status_reads_applied_failed_rolled_back_and_drift():
    rows = [row('a', 0, 1), row('b', 2, 4, checksum='changed'), row('c', 5, 6, rolled_back=9),
            row('d', 7, None, logs='external connector error\nTable is gone\n   0: trace\n           with x'),
            row('old', -5, -4)]
    status = prisma.classify(local('a', 'b', 'c', 'd', 'e'), rows)
    assert [e['name'] for e in status['applied']] == ['old', 'a', 'b']
    assert status['applied'][2]['duration'] == 2.0
    assert status['pending'] == ['c', 'e']
    assert [(f['name'], f['database_message']) for f in status['failed']] == [('d', 'Table is gone')]
    assert status['rolled_back'] == ['c']
    assert status['not_in_folder'] == ['old'] and status['modified'] == ['b']


def test_a_rolled_back_migration_applied_again_counts_as_applied():
    rows = [row('a', 0, 1, rolled_back=3), row('a', 5, 6)]
    status = prisma.classify(local('a'), rows)
    assert [e['name'] for e in status['applied']] == ['a'] and status['pending'] == []
    assert status['applied'][0]['started_at'] == (T0 + datetime.timedelta(seconds=5)).isoformat()


def test_resolved_as_applied_leaves_a_rolled_back_failed_row_and_an_applied_one():
    status = prisma.classify(local('a'), [row('a', 0, None, rolled_back=2), row('a', 3, 3)])
    assert [e['name'] for e in status['applied']] == ['a'] and status['failed'] == []


# -- choosing what to roll back ----------------------------------------------------------------------
def applied_status(*names):
    return prisma.classify(local(*names), [row(n, i * 2, i * 2 + 1) for i, n in enumerate(names)])


def test_roll_back_steps_newest_first():
    status = applied_status('a', 'b', 'c')
    assert [e['name'] for e in prisma.select_rollback(status, steps=2)] == ['c', 'b']
    assert [e['name'] for e in prisma.select_rollback(status, steps=9)] == ['c', 'b', 'a']
    with pytest.raises(prisma.PrismaError, match='steps must be 1 or more'):
        prisma.select_rollback(status, steps=0)


def test_roll_back_down_to_a_migration_includes_it():
    status = applied_status('a', 'b', 'c')
    assert [e['name'] for e in prisma.select_rollback(status, migration='b', known={'a', 'b', 'c'})] == ['c', 'b']


def test_roll_back_down_to_a_migration_no_longer_applied_is_idempotent():
    status = applied_status('a')
    assert prisma.select_rollback(status, migration='b', known={'a', 'b', 'c'}) == []
    with pytest.raises(prisma.PrismaError, match="unknown migration 'zz'"):
        prisma.select_rollback(status, migration='zz', known={'a', 'b'})


# -- CLI output ----------------------------------------------------------------------------------------
def test_native_engine_failure_gives_code_name_and_database_message():
    parsed = prisma.parse_cli_error(NATIVE_P3018)
    assert parsed['code'] == 'P3018'
    assert parsed['migration'] == '20261104000000_backfill_orders'
    assert parsed['sql_state'] == '23503'
    assert parsed['database_message'].startswith('ERROR: insert or update on table "orders" violates foreign key')
    assert 'DETAIL: Key (customer_id)=(424242)' in parsed['database_message']


def test_js_engine_failure_gives_name_and_database_message_without_backtrace():
    parsed = prisma.parse_cli_error('\x1b[31m' + JS_ENGINE_FAILURE + '\x1b[0m')
    assert parsed['code'] is None
    assert parsed['migration'] == '20261104000000_backfill_orders'
    assert parsed['database_message'] == 'Foreign key constraint failed: orders_customer_id_fkey'
    assert 'apply_migration.rs' not in parsed['summary']


def test_p3009_names_the_failed_migration():
    parsed = prisma.parse_cli_error(P3009)
    assert (parsed['code'], parsed['migration']) == ('P3009', '20261104000000_backfill_orders')
    assert parsed['summary'].startswith('P3009 migrate found failed migrations')


def test_output_without_an_error_parses_to_nothing():
    assert prisma.parse_cli_error('Segmentation fault') == dict(code=None, migration=None, database_message=None,
                                                                summary=None, sql_state=None)


# -- the CLI itself ------------------------------------------------------------------------------------
class FakeModule(object):
    def __init__(self):
        self.calls = []

    def run_command(self, argv, **kwargs):
        self.calls.append((argv, kwargs))
        return 0, 'No pending migrations to apply.\n', ''


def runner_for(module):
    """The real CommandRunner, over the fake module: what reaches run_command is what the module would run."""
    return CommandRunner(module)


def fake_pair():
    module = FakeModule()
    return module, runner_for(module)


def node_project(tmp_path):
    package = tmp_path / 'node_modules' / 'prisma'
    (package / 'build').mkdir(parents=True)
    (package / 'package.json').write_text(json.dumps({'name': 'prisma', 'version': '6.19.3'}))
    script = package / 'build' / 'index.js'
    script.write_text('#!/usr/bin/env node\n')
    script.chmod(0o755)
    (tmp_path / 'node_modules' / '.bin').mkdir()
    os.symlink('../prisma/build/index.js', str(tmp_path / 'node_modules' / '.bin' / 'prisma'))
    return str(tmp_path)


def test_cli_runs_under_node_in_the_project_with_the_url_only_in_its_environment(tmp_path, monkeypatch):
    project = node_project(tmp_path)
    node = tmp_path / 'node'
    node.write_text('#!/bin/sh\n')
    node.chmod(0o755)
    monkeypatch.setattr(prisma, 'find_tool', {'node': str(node)}.get)
    module = FakeModule()
    runner = runner_for(module)
    cli = prisma.PrismaCli(module, runner, project, url='postgresql://u:s3cret@h/db', schema='/p/schema.prisma')
    cli.check()
    assert cli.version == '6.19.3'
    rc, output, dummy = cli.deploy()
    argv, kwargs = module.calls[0]
    assert argv == [str(node), project + '/node_modules/.bin/prisma', 'migrate', 'deploy',
                    '--schema=/p/schema.prisma']
    assert kwargs['cwd'] == project
    assert kwargs['environ_update']['DATABASE_URL'] == 'postgresql://u:s3cret@h/db'
    assert kwargs['environ_update']['CHECKPOINT_DISABLE'] == '1'
    assert 's3cret' not in ' '.join(runner.executed)


def test_no_node_on_path_is_a_clear_error(tmp_path, monkeypatch):
    project = node_project(tmp_path)
    monkeypatch.setattr(prisma, 'find_tool', lambda name: None)
    cli = prisma.PrismaCli(*fake_pair(), project)
    with pytest.raises(prisma.PrismaError, match='no node is on PATH.*node_executable'):
        cli.check()


def test_a_missing_cli_names_npm_ci_and_executable(tmp_path):
    cli = prisma.PrismaCli(*fake_pair(), str(tmp_path))
    with pytest.raises(prisma.PrismaError, match="no Prisma CLI at .*npm ci.*set executable"):
        cli.check()


def test_failures_are_explained_even_without_a_prisma_code():
    cli = prisma.PrismaCli(*fake_pair(), '/p')
    err = cli.failure('prisma migrate deploy', 1, P3009)
    assert str(err).startswith('prisma migrate deploy failed (P3009): P3009 migrate found failed migrations')
    assert err.details['migration'] == '20261104000000_backfill_orders'
    err = cli.failure('prisma migrate deploy', -9, '')
    assert 'killed by signal 9' in str(err) and 'no output' in str(err)


def test_cli_output_never_carries_the_url_or_password():
    class Echo(FakeModule):
        def run_command(self, argv, **kwargs):
            return 1, '', 'Error: P1000 Authentication failed for postgresql://u:s3cret@h/db (password s3cret)\n'

    echo = Echo()
    cli = prisma.PrismaCli(echo, runner_for(echo), '/p', url='postgresql://u:s3cret@h/db', secrets=['s3cret'])
    cli.prefix = ['prisma']
    rc, output, dummy = cli.deploy()
    assert 's3cret' not in output and '********' in output
    assert 's3cret' not in str(cli.failure('prisma migrate deploy', rc, output))


# -- which statements of a failed migration were committed (issue 15, item 11) ------------------
SCRIPT = '\ufeff-- purge\nDELETE FROM t WHERE id <= 50;\n UPDATE t SET n = 1 ;;\nINSERT INTO t VALUES (51);\nCREATE INDEX i ON t (n);\n'


def test_js_statements_split_as_the_adapter_does():
    assert prisma.js_statements(SCRIPT) == ['-- purge\nDELETE FROM t WHERE id <= 50', 'UPDATE t SET n = 1',
                                            'INSERT INTO t VALUES (51)', 'CREATE INDEX i ON t (n)']


def test_recorded_failure_gives_committed_failed_and_not_run():
    statements = prisma.js_statements(SCRIPT)
    digest = [prisma.statement_digest(s) for s in statements]
    # Earlier migrations and Prisma's own queries are in the log too; an identical statement elsewhere is not taken.
    entries = [('ok', digest[2]), ('ok', 'x'), ('ok', digest[0]), ('ok', digest[1]), ('error', digest[2])]
    report = prisma.failed_statements(SCRIPT, True, (True, entries))
    assert report['exact'] and report['committed'] == statements[:2]
    assert report['failed'] == statements[2] and report['not_run'] == statements[3:]
    assert 'committed: [1] DELETE FROM t WHERE id <= 50, [2] UPDATE t SET n = 1; failed: [3] INSERT' in report['summary']
    first = prisma.failed_statements(SCRIPT, True, (True, [('error', digest[0])]))
    assert first['committed'] == [] and 'committed: none' in first['summary']


def test_unrecorded_failure_lists_every_statement_as_possibly_committed():
    for recorder, reason in (((False, []), 'not node-postgres'), ((True, [('ok', 'x')]), 'saw none of them fail')):
        report = prisma.failed_statements(SCRIPT, True, recorder)
        assert not report['exact'] and report['failed'] is None
        assert reason in report['summary'] and 'may be committed: [1] DELETE' in report['summary']


def test_one_query_scripts_commit_nothing_unless_they_commit_themselves():
    report = prisma.failed_statements(SCRIPT, False)
    assert report['exact'] and report['committed'] == [] and 'None of its 4 statement(s)' in report['summary']
    own = prisma.failed_statements('BEGIN;\nDELETE FROM t;\n-- done\nCOMMIT;\nINSERT INTO t VALUES (1);\n', False)
    assert not own['exact'] and 'own transaction control' in own['summary']
