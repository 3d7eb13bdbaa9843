"""flyway_migrate's decisions with Flyway replaced at the process boundary (AnsibleModule.run_command) by
hand-written JSON; the real runs (against the Flyway test double and PostgreSQL) are in
tests/integration/plugins/modules/test_flyway_migrate.py."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils import basic

from ansible_collections.runbook.deploy.plugins.modules import flyway_migrate


def migration(version, description, state=None, installed=False, script=None):
    item = dict(category='Versioned' if version else 'Repeatable', version=version or '', rawVersion=version or '',
                description=description, type='SQL', filepath='/srv/db/%s' % (script or 'V%s__%s.sql' % (version, description)),
                executionTime=5)
    if state:
        item.update(state=state, installedOnUTC='2026-11-22T14:00:00Z' if installed else '', undoable='No',
                    undoFilepath='', installedBy='app' if installed else '')
    return item


def info(schema_version, *migrations):
    return dict(schemaVersion=schema_version, schemaName='', migrations=list(migrations), flywayVersion='10.22.0',
                database='app', allSchemasEmpty=False, timestamp='2026-11-22T14:00:00', operation='info',
                exception=None, licenseFailed=False)


@pytest.fixture
def run(monkeypatch, tmp_path, run_main):
    """run(outputs, check=False, **args): outputs maps a Flyway command to (rc, JSON doc or text)."""
    exe = tmp_path / 'flyway'
    exe.write_text('#!/bin/sh\n')
    exe.chmod(0o755)
    (tmp_path / 'db').mkdir()
    # A folder without migrations fails before Flyway runs (issue 15, item 10): the folder holds one.
    (tmp_path / 'db' / 'V1__init.sql').write_text('SELECT 1;\n')

    def call(outputs, check=False, **args):
        calls = []

        def run_command(self, argv, environ_update=None, cwd=None, **kwargs):
            calls.append(dict(argv=argv, env=environ_update, cwd=cwd))
            rc, doc = outputs[argv[1]]
            return rc, doc if isinstance(doc, str) else json.dumps(doc, indent=2), 'Flyway OSS Edition\n'
        monkeypatch.setattr(basic.AnsibleModule, 'run_command', run_command)
        args.setdefault('executable', str(exe))
        args.setdefault('url', 'postgres://app:s3cret@db.internal/app')
        args.setdefault('locations', ['db'])
        args.setdefault('working_dir', str(tmp_path))
        if check:
            args['_ansible_check_mode'] = True
        result = run_main(flyway_migrate.main, args)
        result['calls'] = calls
        return result
    return call


def test_migrate_applies_and_reports_the_state_after(run):
    migrate = dict(initialSchemaVersion='1', targetSchemaVersion='2', schemaName='', migrations=[
        migration('2', 'orders')], migrationsExecuted=1, success=True, flywayVersion='9.22.3', database='app',
        warnings=[], timestamp='x', operation='migrate', exception=None, licenseFailed=False)
    after = info('2', migration('1', 'init', 'Success', True), migration('2', 'orders', 'Success', True))
    result = run(dict(migrate=(0, migrate), info=(0, after)))
    assert result['changed'] is True and not result.get('failed')
    assert (result['schema_version_before'], result['schema_version']) == ('1', '2')
    assert [m['script'] for m in result['applied']] == ['V2__orders.sql'] and result['pending'] == []
    assert [c['argv'][1] for c in result['calls']] == ['migrate', 'info']
    first = result['calls'][0]
    assert first['argv'][2:] == ['-outputType=json', '-locations=filesystem:%s/db' % first['cwd']]
    assert first['env']['FLYWAY_PASSWORD'] == 's3cret' and first['env']['FLYWAY_USER'] == 'app'
    assert first['env']['FLYWAY_URL'] == 'jdbc:postgresql://db.internal:5432/app'
    assert all('s3cret' not in ' '.join(c['argv']) for c in result['calls'])


def test_check_mode_runs_only_info_and_predicts(run):
    before = info('1', migration('1', 'init', 'Success', True), migration('2', 'orders', 'Pending'),
                  migration(None, 'views', 'Pending', script='R__views.sql'))
    result = run(dict(info=(0, before)), check=True)
    assert result['changed'] is True
    assert [m['script'] for m in result['applied']] == ['V2__orders.sql', 'R__views.sql']
    assert result['schema_version'] == '2'
    assert [c['argv'][1] for c in result['calls']] == ['info']


def test_failed_migration_of_flyway_11_names_script_line_and_state(run):
    failed = dict(error=dict(errorCode='FAILED_VERSIONED_MIGRATION', sqlState='42P01', sqlErrorCode=0,
                             message='Migration V2__orders.sql failed', lineNumber=4, path='/srv/db/V2__orders.sql',
                             cause=dict(message='ERROR: relation "nope" does not exist', stackTrace='', cause=None)),
                  initialSchemaVersion='1', targetSchemaVersion=None, schemaName='', migrations=[], migrationsExecuted=0,
                  success=False, flywayVersion='11.20.3', database='app', warnings=[], databaseType='PostgreSQL')
    after = info('1', migration('1', 'init', 'Success', True), migration('2', 'orders', 'Pending'))
    result = run(dict(migrate=(1, failed), info=(0, after)))
    assert result['failed'] is True and result['changed'] is False
    assert result['msg'] == ('migration V2__orders.sql failed at line 4 (FAILED_VERSIONED_MIGRATION, SQL state 42P01): '
                             'ERROR: relation "nope" does not exist; schema now at version 1; the failed migration was '
                             'rolled back and is still pending')
    assert result['error']['script'] == 'V2__orders.sql'
    assert [m['script'] for m in result['pending']] == ['V2__orders.sql']


def test_validate_exits_0_but_failed_validation_fails_the_task(run):
    doc = dict(errorDetails=dict(errorCode='VALIDATE_ERROR', errorMessage='Migrations have failed validation'),
               invalidMigrations=[dict(version='1', description='init', filepath='/srv/db/V1__init.sql',
                                       errorDetails=dict(errorCode='CHECKSUM_MISMATCH',
                                                         errorMessage='Migration checksum mismatch for migration version 1'))],
               validationSuccessful=False, validateCount=2, flywayVersion='10.22.0', database='app', warnings=[],
               operation='validate')
    result = run(dict(validate=(0, doc)), command='validate')
    assert result['failed'] is True
    assert result['msg'] == ('flyway validate found 1 invalid migration(s): V1__init.sql: Migration checksum mismatch for '
                             'migration version 1 (CHECKSUM_MISMATCH)')
    assert result['validation']['successful'] is False


def test_undo_in_community_edition(run):
    doc = dict(error=dict(errorCode='ERROR', message='Flyway Redgate Edition Required: undo is not supported by OSS '
                          'Edition\nDownload Redgate Edition for free: https://rd.gt/3GGIXhh', cause=None))
    result = run(dict(info=(0, info('1', migration('1', 'init', 'Success', True))), undo=(35, doc)), command='undo')
    assert result['failed'] is True
    assert result['msg'].startswith('flyway undo needs a paid edition (Flyway Teams/Enterprise, the Redgate edition)')


def test_text_instead_of_json(run):
    result = run(dict(info=(1, 'ERROR: Unable to parse\n')), command='info')
    assert result['failed'] is True and 'printed no JSON (exit code 1' in result['msg']


def test_nonzero_exit_without_error_object_is_not_success(run):
    result = run(dict(info=(1, info(None))), command='info')
    assert result['failed'] is True and 'exited with code 1 without reporting an error' in result['msg']
