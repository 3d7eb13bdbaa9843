"""Parsing Flyway's JSON (plugins/module_utils/flyway.py) on hand-written samples, without the test double.

The samples follow the Java classes Gson serializes in flyway/flyway at tags flyway-9.22.3, flyway-10.22.0 and
flyway-11.20.3 (api/output/InfoResult, InfoOutput, MigrateResult, MigrateOutput, MigrateErrorResult, ErrorOutput,
ValidateResult, RepairResult, BaselineResult; 11.x api/output/errors/*Converter records): pretty printed,
nulls kept, subclass fields before superclass fields.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import flyway as fw

INFO_10 = '''{
  "schemaVersion": "2",
  "schemaName": "public",
  "migrations": [
    {"category": "Versioned", "version": "1", "rawVersion": "1", "description": "init", "type": "SQL",
     "installedOnUTC": "2026-11-20T10:00:00.123Z", "state": "Success", "undoable": "No",
     "filepath": "/srv/app/db/V1__init.sql", "undoFilepath": "", "installedBy": "app",
     "shouldExecuteExpression": null, "executionTime": 12},
    {"category": "Versioned", "version": "2", "rawVersion": "2", "description": "orders", "type": "SQL",
     "installedOnUTC": "2026-11-20T10:00:01Z", "state": "Failed", "undoable": "No",
     "filepath": "/srv/app/db/V2__orders.sql", "undoFilepath": "", "installedBy": "app",
     "shouldExecuteExpression": null, "executionTime": 3},
    {"category": "Versioned", "version": "3.008", "rawVersion": "3_008", "description": "add fields", "type": "SQL",
     "installedOnUTC": "", "state": "Pending", "undoable": "No", "filepath": "/srv/app/db/V3_008__add_fields.sql",
     "undoFilepath": "", "installedBy": "", "shouldExecuteExpression": null, "executionTime": 0},
    {"category": "Repeatable", "version": "", "rawVersion": "", "description": "views", "type": "SQL",
     "installedOnUTC": "2026-11-20T10:00:00Z", "state": "Outdated", "undoable": "", "filepath": "/srv/app/db/R__views.sql",
     "undoFilepath": "", "installedBy": "app", "shouldExecuteExpression": null, "executionTime": 1},
    {"category": "Repeatable", "version": "", "rawVersion": "", "description": "views", "type": "SQL",
     "installedOnUTC": "", "state": "Pending", "undoable": "", "filepath": "/srv/app/db/R__views.sql",
     "undoFilepath": "", "installedBy": "", "shouldExecuteExpression": null, "executionTime": 0}
  ],
  "flywayVersion": "10.22.0",
  "database": "app",
  "allSchemasEmpty": false,
  "timestamp": "2026-11-22T14:00:00.123456",
  "operation": "info",
  "exception": null,
  "licenseFailed": false
}'''

INFO_9_EMPTY = '''{
  "schemaVersion": null,
  "schemaName": "",
  "migrations": [],
  "flywayVersion": "9.22.3",
  "database": "app",
  "allSchemasEmpty": true,
  "timestamp": "2026-11-22T14:00:00.123",
  "operation": "info",
  "exception": null,
  "licenseFailed": false
}'''

MIGRATE_OK_11 = '''{
  "initialSchemaVersion": "8",
  "targetSchemaVersion": "9",
  "schemaName": "public",
  "migrations": [
    {"category": "Versioned", "version": "9", "description": "add work order fields", "type": "SQL",
     "filepath": "/srv/app/db/V009__add_work_order_fields.sql", "executionTime": 42}
  ],
  "migrationsExecuted": 1,
  "success": true,
  "flywayVersion": "11.20.3",
  "database": "app",
  "warnings": ["outOfOrder mode is active. Migration of schema \\"public\\" may not be reproducible."],
  "databaseType": "PostgreSQL",
  "timestamp": "2026-11-22T14:00:00.1",
  "operation": "migrate",
  "exception": null,
  "licenseFailed": false
}'''

MIGRATE_NOTHING_9 = '''{
  "initialSchemaVersion": "9",
  "targetSchemaVersion": null,
  "schemaName": "public",
  "migrations": [],
  "migrationsExecuted": 0,
  "success": true,
  "flywayVersion": "9.22.3",
  "database": "app",
  "warnings": [],
  "timestamp": "2026-11-22T14:00:00.1",
  "operation": "migrate",
  "exception": null,
  "licenseFailed": false
}'''

SCRIPT_MESSAGE = ('Script V2__orders.sql failed\\n-------------------------\\nSQL State  : 42P01\\nError Code : 0\\n'
                  'Message    : ERROR: relation \\"nope\\" does not exist\\n  Position: 13\\n'
                  'Location   : /srv/app/db/V2__orders.sql (/srv/app/db/V2__orders.sql)\\nLine       : 4\\n'
                  'Statement  : Run Flyway with -X option to see the actual statement causing the problem\\n')

MIGRATE_FAILED_9 = '''{
  "error": {
    "errorCode": "FAILED_VERSIONED_MIGRATION",
    "message": "%s",
    "stackTrace": null,
    "lineNumber": 4,
    "path": "/srv/app/db/V2__orders.sql"
  },
  "initialSchemaVersion": null,
  "targetSchemaVersion": null,
  "schemaName": "",
  "migrations": [
    {"category": "Versioned", "version": "1", "description": "init", "type": "SQL",
     "filepath": "/srv/app/db/V1__init.sql", "executionTime": 10}
  ],
  "migrationsExecuted": 1,
  "success": false,
  "flywayVersion": "9.22.3",
  "database": "app",
  "warnings": [],
  "timestamp": "2026-11-22T14:00:00.1",
  "operation": "migrate",
  "exception": "%s",
  "licenseFailed": false
}''' % (SCRIPT_MESSAGE, SCRIPT_MESSAGE)

MIGRATE_FAILED_10 = '''{
  "error": {
    "errorCode": "FAILED_VERSIONED_MIGRATION",
    "message": "%s",
    "stackTrace": null,
    "lineNumber": 4,
    "path": "/srv/app/db/V2__orders.sql",
    "cause": {"message": "%s", "stackTrace": "org.flywaydb...", "cause": {
        "message": "ERROR: relation \\"nope\\" does not exist\\n  Position: 13", "stackTrace": "...", "cause": null}}
  },
  "initialSchemaVersion": "1",
  "targetSchemaVersion": null,
  "schemaName": "",
  "migrations": [],
  "migrationsExecuted": 0,
  "success": false,
  "flywayVersion": "10.22.0",
  "database": "app",
  "warnings": [],
  "databaseType": "PostgreSQL",
  "timestamp": "2026-11-22T14:00:00.1",
  "operation": "migrate",
  "exception": "%s",
  "licenseFailed": false
}''' % (SCRIPT_MESSAGE, SCRIPT_MESSAGE, SCRIPT_MESSAGE)

# 11.x: FlywayMigrateErrorOutputItem(errorCode, sqlState, sqlErrorCode, message, lineNumber, path, cause), and a
# message that need not carry the "SQL State" / "Message" lines.
MIGRATE_FAILED_11 = '''{
  "error": {
    "errorCode": "FAILED_VERSIONED_MIGRATION",
    "sqlState": "42P01",
    "sqlErrorCode": 0,
    "message": "Migration V2__orders.sql failed",
    "lineNumber": 4,
    "path": "/srv/app/db/V2__orders.sql",
    "cause": {"message": "ERROR: relation \\"nope\\" does not exist\\n  Position: 13", "stackTrace": "...", "cause": null}
  },
  "initialSchemaVersion": "1",
  "targetSchemaVersion": null,
  "schemaName": "",
  "migrations": [],
  "migrationsExecuted": 0,
  "success": false,
  "flywayVersion": "11.20.3",
  "database": "app",
  "warnings": [],
  "databaseType": "PostgreSQL",
  "timestamp": "2026-11-22T14:00:00.1",
  "operation": "migrate",
  "exception": "Migration V2__orders.sql failed",
  "licenseFailed": false
}'''

CONNECTION_MESSAGE = ("Unable to obtain connection from database (jdbc:postgresql://db:5432/app) for user 'app': "
                      "Connection to db:5432 refused.\\n------------------------------------\\nSQL State  : 08001\\n"
                      "Error Code : 0\\nMessage    : Connection to db:5432 refused.\\n")
CONNECTION_9 = '''{"error": {"errorCode": "DB_CONNECTION", "message": "%s", "stackTrace": null, "lineNumber": null,
  "path": null}}''' % CONNECTION_MESSAGE
CONNECTION_10 = '''{"error": {"errorCode": "DB_CONNECTION", "message": "%s", "stackTrace": null, "lineNumber": null,
  "path": null, "cause": {"message": "Connection to db:5432 refused.", "stackTrace": "...", "cause": null}}}''' % (
    CONNECTION_MESSAGE)
CONNECTION_11 = '''{"error": {"errorCode": "DB_CONNECTION", "subErrorCode": null, "sqlState": "08001", "sqlErrorCode": 0,
  "message": "%s", "cause": {"message": "Connection to db:5432 refused.", "stackTrace": "...", "cause": null}}}''' % (
    CONNECTION_MESSAGE)

UNDO_9 = '''{"error": {"errorCode": "ERROR", "message": "undo is not available in this edition of Flyway.\\nRedgate Flyway
 offers extended functionality - visit this link for more info: https://rd.gt/3ytplJq", "stackTrace": null,
 "lineNumber": null, "path": null}}'''.replace('\n', '')
UNDO_11 = '''{"error": {"errorCode": "ERROR", "message": "Flyway Redgate Edition Required: undo is not supported by OSS
 Edition\\nDownload Redgate Edition for free: https://rd.gt/3GGIXhh", "cause": null}}'''.replace('\n', '')

VALIDATE_FAILED = json.dumps({
    "errorDetails": {"errorCode": "VALIDATE_ERROR", "errorMessage": "Migrations have failed validation"},
    "invalidMigrations": [
        {"version": "1", "description": "init", "filepath": "/srv/app/db/V1__init.sql",
         "errorDetails": {"errorCode": "CHECKSUM_MISMATCH", "errorMessage": (
             "Migration checksum mismatch for migration version 1\n-> Applied to database : 123\n"
             "-> Resolved locally    : -456\nEither revert the changes to the migration, or run repair to update "
             "the schema history.")}},
        {"version": "4", "description": "gone", "filepath": "",
         "errorDetails": {"errorCode": "APPLIED_VERSIONED_MIGRATION_NOT_RESOLVED",
                          "errorMessage": "Detected applied migration not resolved locally: 4."}},
    ],
    "validationSuccessful": False,
    "validateCount": 3,
    "flywayVersion": "10.22.0",
    "database": "app",
    "warnings": [],
    "operation": "validate",
}, indent=2)

VALIDATE_OK = '''{"errorDetails": null, "invalidMigrations": [], "validationSuccessful": true, "validateCount": 3,
  "flywayVersion": "9.22.3", "database": "app", "warnings": [], "operation": "validate"}'''

REPAIR = '''{"repairActions": ["Removed failed migrations", "Aligned applied migration checksums"],
  "migrationsRemoved": [{"version": "2", "description": "orders", "filepath": "/srv/app/db/V2__orders.sql"}],
  "migrationsDeleted": [],
  "migrationsAligned": [{"version": "1", "description": "init", "filepath": "/srv/app/db/V1__init.sql"}],
  "flywayVersion": "11.20.3", "database": "app", "warnings": [], "operation": "repair"}'''


def details(text):
    return fw.error_details(fw.parse_json('migrate', 1, text, ''))


def test_info_is_summarized():
    info = fw.summarize_info(fw.parse_json('info', 0, INFO_10, ''))
    assert info['schema_version'] == '2'
    assert [(m['script'], m['state']) for m in info['pending']] == [
        ('V3_008__add_fields.sql', 'Pending'), ('R__views.sql', 'Pending')]
    assert [m['script'] for m in info['failed']] == ['V2__orders.sql']
    assert [m['script'] for m in info['applied']] == ['V1__init.sql', 'R__views.sql']
    first = info['migrations'][0]
    assert first == dict(version='1', description='init', category='Versioned', type='SQL', script='V1__init.sql',
                         filepath='/srv/app/db/V1__init.sql', execution_time=12, state='Success',
                         installed_on='2026-11-20T10:00:00.123Z', installed_by='app', undoable=False)
    assert info['migrations'][3]['version'] is None


def test_info_of_an_empty_schema():
    info = fw.summarize_info(fw.parse_json('info', 0, INFO_9_EMPTY, ''))
    assert info == dict(schema_version=None, migrations=[], pending=[], applied=[], failed=[])


def test_info_without_migrations_is_refused():
    with pytest.raises(fw.FlywayError, match='without a migrations list'):
        fw.summarize_info({'flywayVersion': '10.22.0'})


def test_migrate_success_and_nothing_to_do():
    ok = fw.summarize_migrate(fw.parse_json('migrate', 0, MIGRATE_OK_11, ''))
    assert (ok['schema_version_before'], ok['target_schema_version'], ok['executed'], ok['success']) == ('8', '9', 1, True)
    assert ok['applied'][0]['script'] == 'V009__add_work_order_fields.sql'
    assert ok['warnings'][0].startswith('outOfOrder mode is active')
    nothing = fw.summarize_migrate(fw.parse_json('migrate', 0, MIGRATE_NOTHING_9, ''))
    assert (nothing['executed'], nothing['applied'], nothing['target_schema_version']) == (0, [], None)


@pytest.mark.parametrize('sample', [MIGRATE_FAILED_9, MIGRATE_FAILED_10, MIGRATE_FAILED_11], ids=['9', '10', '11'])
def test_failed_migration_of_every_version(sample):
    doc = fw.parse_json('migrate', 1, sample, '')
    err = fw.error_details(doc)
    assert (err['code'], err['script'], err['line'], err['sql_state']) == (
        'FAILED_VERSIONED_MIGRATION', 'V2__orders.sql', 4, '42P01')
    assert err['db_message'].startswith('ERROR: relation "nope" does not exist')
    message = fw.describe_error('migrate', 1, err)
    assert message.startswith('migration V2__orders.sql failed at line 4 (FAILED_VERSIONED_MIGRATION, SQL state 42P01): '
                              'ERROR: relation "nope" does not exist')
    assert fw.summarize_migrate(doc)['success'] is False


def test_causes_are_collected_in_order():
    err = details(MIGRATE_FAILED_10)
    assert len(err['causes']) == 2 and err['causes'][1].startswith('ERROR: relation')
    assert details(MIGRATE_FAILED_9)['causes'] == []


@pytest.mark.parametrize('sample', [CONNECTION_9, CONNECTION_10, CONNECTION_11], ids=['9', '10', '11'])
def test_connection_errors_of_every_version(sample):
    err = details(sample)
    assert err['code'] == 'DB_CONNECTION' and err['sql_state'] == '08001' and err['script'] is None
    message = fw.describe_error('info', 1, err)
    assert message.startswith('flyway info could not connect to the database: Unable to obtain connection')
    assert '-----' not in message and 'check url, user and password' in message


@pytest.mark.parametrize('sample,rc', [(UNDO_9, 1), (UNDO_11, 35)], ids=['9', '11'])
def test_undo_in_community_edition_says_paid_edition(sample, rc):
    err = details(sample)
    assert fw.is_paid_edition_error(rc, err)
    assert fw.describe_error('undo', rc, err).startswith('flyway undo needs a paid edition (Flyway Teams/Enterprise')


def test_exit_code_35_alone_means_licensing():
    assert fw.is_paid_edition_error(35, dict(message='something else'))
    assert not fw.is_paid_edition_error(1, dict(message='Validate failed'))


def test_other_errors_keep_flyways_words():
    err = details('{"error": {"errorCode": "NON_EMPTY_SCHEMA_WITHOUT_SCHEMA_HISTORY_TABLE", "message": "Found non-empty '
                  'schema(s) \\"public\\" but no schema history table.", "cause": null}}')
    assert 'Run command=baseline first' in fw.describe_error('migrate', 1, err)
    err = details('{"error": {"errorCode": "VALIDATE_ERROR", "message": "Validate failed: Migrations have failed '
                  'validation\\nMigration checksum mismatch for migration version 1"}}')
    assert fw.describe_error('migrate', 1, err) == (
        'flyway migrate failed (VALIDATE_ERROR): Validate failed: Migrations have failed validation Migration checksum '
        'mismatch for migration version 1')


def test_validate_exit_0_with_failed_validation():
    validation = fw.summarize_validate(fw.parse_json('validate', 0, VALIDATE_FAILED, ''))
    assert validation['successful'] is False and validation['count'] == 3
    assert [(i['script'], i['code']) for i in validation['invalid_migrations']] == [
        ('V1__init.sql', 'CHECKSUM_MISMATCH'), (None, 'APPLIED_VERSIONED_MIGRATION_NOT_RESOLVED')]
    text = fw.describe_invalid(validation)
    assert text.startswith('V1__init.sql: Migration checksum mismatch for migration version 1 -> Applied to database : 123')
    assert 'version 4: Detected applied migration not resolved locally: 4. (APPLIED_VERSIONED_MIGRATION_NOT_RESOLVED)' in text
    assert fw.summarize_validate(json.loads(VALIDATE_OK))['successful'] is True
    with pytest.raises(fw.FlywayError, match='without validationSuccessful'):
        fw.summarize_validate({'flywayVersion': '10.22.0'})


def test_repair_and_its_prediction():
    repair = fw.summarize_repair(json.loads(REPAIR))
    assert [m['script'] for m in repair['removed']] == ['V2__orders.sql']
    assert [m['script'] for m in repair['aligned']] == ['V1__init.sql'] and repair['deleted'] == []
    info = fw.summarize_info(json.loads(INFO_10))
    predicted = fw.predict_repair(fw.summarize_validate(json.loads(VALIDATE_FAILED)), info)
    assert [m['script'] for m in predicted['removed']] == ['V2__orders.sql']
    assert [m['script'] for m in predicted['aligned']] == ['V1__init.sql']
    assert [m['version'] for m in predicted['deleted']] == ['4']


def test_json_after_log_lines_is_found():
    doc = fw.parse_json('info', 0, 'Flyway OSS Edition 10.22.0 by Redgate\nSchema version: 2\n' + INFO_9_EMPTY, '')
    assert doc['flywayVersion'] == '9.22.3'


@pytest.mark.parametrize('stdout,stderr,rc,fragments', [
    ('{"schemaVersion": ', '', 0, ['printed malformed JSON', 'exit code 0']),
    ('', 'Error: Could not find or load main class org.flywaydb.commandline.Main', 1, ['printed no JSON', 'main class']),
    ('', '/opt/flyway/flyway: 1: exec: java: not found', 127, ['Flyway needs Java']),
    ('[1, 2]', '', 0, ['printed no JSON']),
])
def test_output_that_is_not_flyway_json(stdout, stderr, rc, fragments):
    with pytest.raises(fw.FlywayError) as err:
        fw.parse_json('info', rc, stdout, stderr)
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize('given,expected', [
    ('V009', '009'), ('v9', '9'), ('3_008', '3.008'), ('V3_008', '3.008'), ('2.1', '2.1'), ('latest', 'latest'),
    ('Current', 'current'), ('next', 'next'), ('V5?', '5?'), (None, None),
])
def test_targets(given, expected):
    assert fw.normalize_target(given) == expected


@pytest.mark.parametrize('bad', ['Vabc', '1.x', 'V', '-1', '9;rm'])
def test_bad_targets(bad):
    with pytest.raises(fw.FlywayError, match='is not a Flyway version'):
        fw.normalize_target(bad)


def test_urls():
    assert fw.jdbc_from_url('jdbc:postgresql://db:5432/app') == ('jdbc:postgresql://db:5432/app', None, None)
    assert fw.jdbc_from_url('postgres://app:s%3Acret@db.internal:6543/app?sslmode=require') == (
        'jdbc:postgresql://db.internal:6543/app?sslmode=require', 'app', 's:cret')
    assert fw.jdbc_from_url('postgresql://db/app')[0] == 'jdbc:postgresql://db:5432/app'
    for bad, fragment in (('mysql://u:pw@h/db', 'must be a JDBC URL'), ('postgres://u:pw@h', 'no database name'),
                          ('postgres://u:pw@h:port/db', 'not a valid URL'), ('jdbc:', 'not a JDBC URL')):
        with pytest.raises(fw.FlywayError, match=fragment) as err:
            fw.jdbc_from_url(bad)
        assert 'pw' not in str(err.value)


def test_invocation_keeps_secrets_off_argv():
    argv, env = fw.build_invocation('/opt/flyway/flyway', 'migrate', locations=['filesystem:/srv/db'],
                                    config_files=['/srv/flyway.conf'], schemas=['app', 'audit'], target='9',
                                    extra_args=['-table=history'], url='jdbc:postgresql://db/app', user='app',
                                    password='s3cret')
    assert argv == ['/opt/flyway/flyway', 'migrate', '-outputType=json', '-configFiles=/srv/flyway.conf',
                    '-locations=filesystem:/srv/db', '-schemas=app,audit', '-target=9', '-table=history']
    assert env == {'FLYWAY_URL': 'jdbc:postgresql://db/app', 'FLYWAY_USER': 'app', 'FLYWAY_PASSWORD': 's3cret',
                   'REDGATE_DISABLE_TELEMETRY': 'true'}
    argv, dummy = fw.build_invocation('flyway', 'repair', target='9', baseline_version='2')
    assert argv == ['flyway', 'repair', '-outputType=json']


@pytest.mark.parametrize('args,fragment', [
    (['-password=x'], 'use the login_password option'), (['-url=jdbc:x'], 'use the db_url option'),
    (['-outputType=text'], 'the module sets it'), (['-jdbcProperties.password=x'], 'use the login_password option'),
    (['migrate'], 'is not a flag'), (['-locations=a'], 'use the locations option'),
])
def test_extra_args_cannot_override_the_module(args, fragment):
    with pytest.raises(fw.FlywayError, match=fragment):
        fw.check_extra_args(args)
    fw.check_extra_args(['-table=history', '-outOfOrder=true'])


def test_locations():
    assert fw.location_dirs(['db/migrations', 'filesystem:/abs', 'classpath:db/migration'], '/srv/app') == [
        ('db/migrations', '/srv/app/db/migrations'), ('filesystem:/abs', '/abs')]
    assert fw.flyway_location('db/migrations', '/srv/app/db/migrations') == 'filesystem:/srv/app/db/migrations'
    assert fw.flyway_location('classpath:db', 'ignored') == 'classpath:db'


# -- the down path (state=rolled_back) ------------------------------------------------------------------------
def test_lock_key_is_flyways_for_the_quoted_history_table():
    # String.hashCode() of "public"."flyway_schema_history" (s[0]*31^(n-1) + ... in signed 32-bit arithmetic);
    # Flyway's PostgreSQLAdvisoryLockTemplate adds it to 77431708279161.
    expected = 2125624436
    assert fw.java_hash('"public"."flyway_schema_history"') == expected
    assert fw.lock_key('public', 'flyway_schema_history') == 77431708279161 + expected
    assert fw.java_hash('') == 0 and fw.java_hash('a') == 97 and fw.java_hash('ab') == 97 * 31 + 98


@pytest.mark.parametrize('left, right', [('3.013', '3.13'), ('1.0', '1'), ('V3_013', '3.013'), ('009', '9')])
def test_versions_compare_as_flyway_compares_them(left, right):
    assert fw.version_key(left) == fw.version_key(right)


def test_versions_order_part_by_part():
    assert fw.version_key('3.10') > fw.version_key('3.9') > fw.version_key('3') > fw.version_key('2.99')


def _row(rank, version, script, type_='SQL', success=True):
    return dict(installed_rank=rank, version=version, description=script, type=type_, script=script, success=success)


HISTORY = [_row(1, '1', 'V1__a.sql', 'BASELINE'), _row(2, '2', 'V2__b.sql'), _row(3, None, 'R__view.sql'),
           _row(4, '3.012', 'V3_012__c.sql'), _row(5, '3.013', 'V3_013__d.sql')]


def test_select_rollback_by_target_steps_and_migration():
    assert [r['version'] for r in fw.select_rollback(HISTORY, target='2')] == ['3.013', '3.012']
    assert [r['version'] for r in fw.select_rollback(HISTORY, target='0')] == ['3.013', '3.012', '2']
    assert [r['version'] for r in fw.select_rollback(HISTORY, steps=1)] == ['3.013']
    assert [r['version'] for r in fw.select_rollback(HISTORY, migration='V3_012')] == ['3.013', '3.012']
    assert [r['version'] for r in fw.select_rollback(HISTORY, migration='V3_012__c.sql')] == ['3.013', '3.012']
    assert fw.select_rollback(HISTORY, migration='V9') == [], 'not applied: nothing to roll back'
    assert fw.select_rollback(HISTORY, target='3.013') == []
    with pytest.raises(fw.FlywayError, match='steps must be 1 or more'):
        fw.select_rollback(HISTORY, steps=0)


def test_an_undo_row_takes_its_version_out_and_the_version_is_the_highest_applied():
    undone = HISTORY + [_row(6, '3.013', 'U3_013__d.sql', 'UNDO_SQL')]
    assert [r['version'] for r in fw.applied_versioned(undone)] == ['2', '3.012']
    assert fw.current_version(undone) == '3.012'
    assert fw.current_version(HISTORY[:1]) == '1', 'a baseline is a schema version'
    assert fw.current_version([]) is None


def test_down_scripts_are_found_by_the_version_in_their_names(tmp_path):
    folder = tmp_path / 'rollback_scripts'
    (folder / 'old').mkdir(parents=True)
    for name in ('rollback_V3_013.sql', 'V3_012__rollback.sql', 'U2__undo_b.sql', 'README.md', 'notes_v4.txt'):
        (folder / name).write_text('--\n')
    (folder / 'old' / 'rollback_V1.sql').write_text('--\n')
    found = fw.down_scripts_in(str(folder), undo_only=False)
    assert sorted((key, [p.rsplit('/', 1)[1] for p in paths]) for key, paths in found.items()) == [
        ((1,), ['rollback_V1.sql']), ((2,), ['U2__undo_b.sql']), ((3, 12), ['V3_012__rollback.sql']),
        ((3, 13), ['rollback_V3_013.sql'])]
    # Beside the migrations only Flyway's undo naming counts: V files there are the migrations themselves.
    assert list(fw.down_scripts_in(str(folder), undo_only=True)) == [(2,)]


def test_connection_options_are_prisma_migrates(tmp_path):
    jdbc, conn = fw.connection_settings(dict(login_host='db.internal', login_port=5433, db='app', login_user='m',
                                             login_password='s3cret', ssl_mode='require'))
    assert jdbc == 'jdbc:postgresql://db.internal:5433/app?sslmode=require'
    assert conn == dict(host='db.internal', port=5433, dbname='app', user='m', password='s3cret', sslmode='require')
    jdbc, conn = fw.connection_settings(dict(db_url='jdbc:postgresql://h:5432/app?user=u&password=p%40ss&ssl=true'))
    assert jdbc == 'jdbc:postgresql://h:5432/app?user=u&password=p%40ss&ssl=true', 'a JDBC URL is passed on whole'
    assert conn == dict(host='h', port=5432, dbname='app', user='u', password='p@ss')
    jdbc, conn = fw.connection_settings(dict(db_url='postgres://u:p@h/app', db='other'))
    assert jdbc == 'jdbc:postgresql://h:5432/other' and conn['dbname'] == 'other' and conn['password'] == 'p'
    assert fw.connection_settings(dict(login_password='p')) == (None, dict(password='p')), \
        'the database is left to fw.url in the configuration files'
    with pytest.raises(fw.FlywayError, match='over TCP only'):
        fw.connection_settings(dict(login_unix_socket='/run/postgresql'))
    conf = tmp_path / 'flyway-prod.conf'
    conf.write_text('# production\nflyway.url = jdbc:postgresql://db:5432/pm\n! also a comment\nflyway.user=migrator\n'
                    'flyway.schemas=app,audit\nother.key=1\n')
    assert fw.read_config_files([str(conf)]) == (dict(url='jdbc:postgresql://db:5432/pm', user='migrator',
                                                          schemas='app,audit'), False)


def test_only_down_script_names_count_never_migrations_or_notes(tmp_path):
    folder = tmp_path / 'rollback_scripts'
    folder.mkdir()
    for name in ('rollback_V3_013_add_index.sql', 'rollback-V4.sql', 'rollback_V3_0131.sql', 'R__V2.sql',
                 'notes_v1.sql', 'seed_v2.sql', 'V10__undo.sql'):
        (folder / name).write_text('--\n')
    found = fw.down_scripts_in(str(folder), undo_only=False)
    assert sorted((key, [p.rsplit('/', 1)[1] for p in paths]) for key, paths in found.items()) == [
        ((3, 13), ['rollback_V3_013_add_index.sql']), ((3, 131), ['rollback_V3_0131.sql']), ((4,), ['rollback-V4.sql']),
        ((10,), ['V10__undo.sql'])]


def test_a_repair_delete_row_and_paid_baselines_are_not_applied_migrations():
    rows = [_row(1, '1', 'B1__base.sql', 'SQL_BASELINE'), _row(2, '2', 'V2__b.sql'), _row(3, '3', 'V3__c.sql'),
            _row(4, '2', 'V2__b.sql', 'DELETE')]
    assert [r['version'] for r in fw.applied_versioned(rows)] == ['3']
    assert [r['version'] for r in fw.select_rollback(rows, steps=1)] == ['3']
    assert [r['version'] for r in fw.select_rollback(rows, target='1')] == ['3'], 'V2 is not rolled back twice'
    assert fw.current_version(rows) == '3'


def test_a_script_in_a_subfolder_is_found_by_its_file_name():
    rows = [_row(1, '1', 'V1__a.sql'), _row(2, '2', 'sub/V2__b.sql')]
    assert [r['version'] for r in fw.select_rollback(rows, migration='V2__b.sql')] == ['2']


def test_the_lock_key_doubles_quotes_as_flyway_quotes_names():
    assert fw.lock_key('we"ird', 'h') == 77431708279161 + fw.java_hash('"we""ird"."h"')


def test_urls_libpq_cannot_read_are_passed_to_flyway_whole():
    for url in ('jdbc:postgresql://h1:5432,h2:5432/app', 'jdbc:postgresql:app'):
        assert fw.connection_settings(dict(db_url=url)) == (url, None)
    jdbc, conn = fw.connection_settings(dict(db_url='jdbc:postgresql://h/app?password=a+b%2B'))
    assert conn['password'] == 'a b+', 'pgjdbc decodes parameters with URLDecoder'


def test_configuration_files_are_read_as_java_properties(tmp_path):
    conf = tmp_path / 'flyway.conf'
    conf.write_text('flyway.url: jdbc:postgresql://db:5432/\\\n    pm\nflyway.user  migrator\n'
                    'flyway.password=p\\=ss\\u0021\nflyway.table = hist\n')
    toml = tmp_path / 'flyway.toml'
    toml.write_text('[environments.default]\n')
    assert fw.read_config_files([str(conf), str(toml)]) == (
        dict(url='jdbc:postgresql://db:5432/pm', user='migrator', password='p=ss!', table='hist'), True)
