"""runbook.deploy.flyway_migrate against the real PostgreSQL of the local stack.

Flyway itself cannot be installed here (FACTS.md), so the module drives the TEST DOUBLE in
tests/doubles/flyway/flyway, which imitates the Flyway 9, 10 or 11 command line on the real database.
The module's parsing is also tested without the double, on hand-written JSON samples
(tests/unit/plugins/module_utils/test_flyway.py).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zlib

import pytest

from helpers import REPO, ProcessWatcher, assert_clear_failure, sql

MODULE = 'runbook.deploy.flyway_migrate'
DOUBLE = os.path.join(REPO, 'tests', 'doubles', 'flyway', 'flyway')
VERSIONS = ['9', '10', '11']
FLYWAY_VERSIONS = {'9': '9.22.3', '10': '10.22.0', '11': '11.20.3'}

V1 = 'CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);\n'
V2 = ('ALTER TABLE customers ADD COLUMN email text;\n'
      '-- a comment; with a semicolon\n'
      "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END; $$;\n")
V3 = 'CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id));\n'
R_VIEW = 'CREATE OR REPLACE VIEW customer_names AS SELECT name FROM customers;\n'
BROKEN = 'CREATE TABLE half_done (id int);\nINSERT INTO nope VALUES (1);\n'


def write_script(path, text):
    with open(path, 'w') as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    return str(path)


@pytest.fixture
def executable(tmp_path):
    """A wrapper that runs the double with the venv's python, imitating the given Flyway major version."""
    def make(version='10'):
        return write_script(tmp_path / ('flyway%s' % version), '#!/bin/sh\nFLYWAY_DOUBLE_VERSION=%s exec %s %s "$@"\n'
                            % (version, sys.executable, DOUBLE))
    return make


@pytest.fixture
def project(tmp_path):
    """A migrations folder; project(V1=..., ...) writes files, project.path is the folder."""
    folder = tmp_path / 'db' / 'migrations'
    folder.mkdir(parents=True)

    def write(**files):
        for name, text in files.items():
            filename = name if name.endswith('.sql') else name + '.sql'
            (folder / filename).write_text(text)
    write.path = str(folder)
    return write


@pytest.fixture
def flyway(run_module, stack, executable, project):
    """Call flyway_migrate on a database with the double (override any argument)."""
    def call(db, check=False, version='10', **args):
        merged = dict(url='jdbc:postgresql://%s:%s/%s' % (stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db),
                      user=stack['RUNBOOK_PG_USER'], password=stack['RUNBOOK_PG_PASSWORD'],
                      locations=[project.path], executable=executable(version))
        merged.update(args)
        # None leaves an option out: the names Flyway users know (url, user, password) are aliases of db_url,
        # login_user and login_password, and an alias given as None would override the option.
        return run_module(MODULE, check=check, **dict((k, v) for k, v in merged.items() if v is not None))
    return call


def history(stack, db):
    return sql(stack, db, 'SELECT installed_rank, version, description, type, script, checksum, success '
                          'FROM flyway_schema_history ORDER BY installed_rank')


def table_exists(stack, db, name):
    return sql(stack, db, 'SELECT to_regclass(%s) IS NOT NULL', (name,))[0][0]


def crc(text):
    """Flyway's checksum, computed here independently of the double: CRC32 over lines, signed."""
    value = 0
    for line in text.splitlines():
        value = zlib.crc32(line.encode('utf-8'), value)
    return value - (1 << 32) if value >= (1 << 31) else value


def names(entries):
    return [e['script'] for e in entries]


@pytest.mark.parametrize('version', VERSIONS)
def test_pending_then_check_then_target_then_all_then_nothing(flyway, project, make_db, stack, version):
    project(V1__customers=V1, V2__email=V2, V3__orders=V3, R__customer_names=R_VIEW)
    db = make_db('fw', rows=None)

    info = flyway(db, version=version, command='info')
    assert info['changed'] is False and info['flyway_version'] == FLYWAY_VERSIONS[version]
    assert info['schema_version'] is None
    assert names(info['pending']) == ['V1__customers.sql', 'V2__email.sql', 'V3__orders.sql', 'R__customer_names.sql']
    assert [m['state'] for m in info['migrations']] == ['Pending'] * 4

    planned = flyway(db, check=True, version=version)
    assert planned['changed'] is True
    assert names(planned['applied']) == names(info['pending'])
    assert planned['schema_version'] == '3'
    assert not table_exists(stack, db, 'flyway_schema_history'), 'check mode wrote to the database'

    to_v2 = flyway(db, version=version, target='V002')
    assert to_v2['changed'] is True, to_v2
    assert names(to_v2['applied']) == ['V1__customers.sql', 'V2__email.sql', 'R__customer_names.sql']
    assert (to_v2['schema_version_before'], to_v2['schema_version']) == (None, '2')
    assert [m['state'] for m in to_v2['migrations'] if m['version'] == '3'] == ['Above Target']
    assert '-target=002' in to_v2['executed_commands'][0]
    assert not table_exists(stack, db, 'orders')

    rest = flyway(db, version=version)
    assert rest['changed'] is True
    assert names(rest['applied']) == ['V3__orders.sql']
    assert (rest['schema_version_before'], rest['schema_version']) == ('2', '3')
    assert rest['pending'] == [] and rest['failed_migrations'] == []
    assert table_exists(stack, db, 'orders')

    again = flyway(db, version=version)
    assert again['changed'] is False and again['applied'] == []
    assert again['schema_version'] == again['schema_version_before'] == '3'

    rows = history(stack, db)
    assert [(r[1], r[3], r[4], r[6]) for r in rows] == [
        ('1', 'SQL', 'V1__customers.sql', True), ('2', 'SQL', 'V2__email.sql', True),
        (None, 'SQL', 'R__customer_names.sql', True), ('3', 'SQL', 'V3__orders.sql', True)]
    assert [r[5] for r in rows] == [crc(V1), crc(V2), crc(R_VIEW), crc(V3)]
    columns = sql(stack, db, "SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'flyway_schema_history' ORDER BY ordinal_position")
    assert columns == [('installed_rank', 'integer'), ('version', 'character varying'),
                       ('description', 'character varying'), ('type', 'character varying'),
                       ('script', 'character varying'), ('checksum', 'integer'),
                       ('installed_by', 'character varying'), ('installed_on', 'timestamp without time zone'),
                       ('execution_time', 'integer'), ('success', 'boolean')]


@pytest.mark.parametrize('version', VERSIONS)
def test_failing_migration_is_rolled_back_reported_and_resolved(flyway, project, make_db, stack, version):
    project(V1__customers=V1, V2__broken=BROKEN, V3__orders=V3)
    db = make_db('fw', rows=None)

    failed = flyway(db, version=version)
    assert_clear_failure(failed, 'migration V2__broken.sql failed at line 2', 'relation "nope" does not exist',
                         '42P01', 'schema now at version 1', 'rolled back')
    assert failed['error']['code'] == 'FAILED_VERSIONED_MIGRATION'
    assert names(failed['applied']) == ['V1__customers.sql']
    assert [(m['script'], m['state']) for m in failed['migrations']] == [
        ('V1__customers.sql', 'Success'), ('V2__broken.sql', 'Pending'), ('V3__orders.sql', 'Pending')]
    # PostgreSQL runs the migration in a transaction: nothing of V2 stays, and Flyway keeps no failed row.
    assert not table_exists(stack, db, 'half_done')
    assert [r[4] for r in history(stack, db)] == ['V1__customers.sql']

    status = flyway(db, version=version, command='info')
    assert status['schema_version'] == '1'
    assert names(status['pending']) == ['V2__broken.sql', 'V3__orders.sql']

    # Resolve: fix the script, migrate again.
    project(V2__broken='CREATE TABLE half_done (id int);\n')
    fixed = flyway(db, version=version)
    assert fixed['changed'] is True
    assert names(fixed['applied']) == ['V2__broken.sql', 'V3__orders.sql']
    assert fixed['schema_version'] == '3'


@pytest.mark.slow
@pytest.mark.parametrize('version', VERSIONS)
def test_failed_non_transactional_migration_leaves_a_failed_row_until_repair(flyway, project, make_db, stack, version):
    project(V1__customers=V1, V2__index='CREATE INDEX CONCURRENTLY customers_nope ON customers (nope);\n')
    db = make_db('fw', rows=None)

    failed = flyway(db, version=version)
    assert_clear_failure(failed, 'V2__index.sql', 'column "nope" does not exist', 'failed migration(s) recorded',
                         'command=repair')
    assert names(failed['failed_migrations']) == ['V2__index.sql']
    assert [(r[4], r[6]) for r in history(stack, db)] == [('V1__customers.sql', True), ('V2__index.sql', False)]

    blocked = flyway(db, version=version)
    assert_clear_failure(blocked, 'Detected failed migration to version 2')
    blocked_check = flyway(db, check=True, version=version)
    assert_clear_failure(blocked_check, 'migrate would fail', 'V2__index.sql', 'command=repair')

    predicted = flyway(db, check=True, version=version, command='repair')
    assert predicted['changed'] is True and names(predicted['repair']['removed']) == ['V2__index.sql']
    assert len(history(stack, db)) == 2

    repaired = flyway(db, version=version, command='repair')
    assert repaired['changed'] is True
    assert names(repaired['repair']['removed']) == ['V2__index.sql']
    assert repaired['failed_migrations'] == [] and names(repaired['pending']) == ['V2__index.sql']
    assert flyway(db, version=version, command='repair')['changed'] is False

    project(V2__index='CREATE INDEX CONCURRENTLY customers_name ON customers (name);\n')
    done = flyway(db, version=version)
    assert done['changed'] is True and done['schema_version'] == '2'


@pytest.mark.slow
@pytest.mark.parametrize('version', VERSIONS)
def test_validate_detects_an_edited_migration_and_repair_aligns_it(flyway, project, make_db, stack, version):
    project(V1__customers=V1, V2__email=V2)
    db = make_db('fw', rows=None)
    assert flyway(db, version=version)['changed'] is True
    assert flyway(db, version=version, command='validate')['validation']['successful'] is True

    edited = V1.replace('name text', 'full_name text')
    project(V1__customers=edited)
    invalid = flyway(db, version=version, command='validate')
    assert_clear_failure(invalid, 'V1__customers.sql', 'checksum mismatch', 'CHECKSUM_MISMATCH',
                         str(crc(V1)), str(crc(edited)))
    assert invalid['validation']['successful'] is False

    refused = flyway(db, version=version)
    assert_clear_failure(refused, 'Validate failed', 'checksum mismatch for migration version 1')

    predicted = flyway(db, check=True, version=version, command='repair')
    assert predicted['changed'] is True and names(predicted['repair']['aligned']) == ['V1__customers.sql']
    assert history(stack, db)[0][5] == crc(V1)

    repaired = flyway(db, version=version, command='repair')
    assert repaired['changed'] is True and names(repaired['repair']['aligned']) == ['V1__customers.sql']
    assert history(stack, db)[0][5] == crc(edited)
    assert flyway(db, version=version, command='validate')['validation']['successful'] is True
    assert flyway(db, version=version, command='repair')['changed'] is False


def test_validate_reports_pending_migrations_like_flyway(flyway, project, make_db):
    project(V1__customers=V1)
    db = make_db('fw', rows=None)
    result = flyway(db, command='validate')
    assert_clear_failure(result, 'Detected resolved migration not applied to database: 1',
                         'RESOLVED_VERSIONED_MIGRATION_NOT_APPLIED')
    ignored = flyway(db, command='validate', extra_args=['-ignoreMigrationPatterns=*:pending'])
    assert ignored['validation']['successful'] is True and ignored['changed'] is False


@pytest.mark.parametrize('version', VERSIONS)
def test_baseline_an_existing_database(flyway, project, make_db, stack, version):
    project(V1__users='CREATE TABLE public.users (id serial PRIMARY KEY);\n',
            V2__customers=V1, V3__orders=V3)
    db = make_db('fw')  # holds public.users, sales.orders

    refused = flyway(db, version=version)
    assert_clear_failure(refused, 'non-empty schema', 'command=baseline')
    assert not table_exists(stack, db, 'flyway_schema_history')

    planned = flyway(db, check=True, version=version, command='baseline', baseline_version='1')
    assert planned['changed'] is True and planned['baseline_version'] == '1'
    assert not table_exists(stack, db, 'flyway_schema_history')

    baselined = flyway(db, version=version, command='baseline', baseline_version='1')
    assert baselined['changed'] is True and baselined['baseline_version'] == '1'
    assert baselined['schema_version'] == '1'
    assert [(m['version'], m['state']) for m in baselined['migrations']] == [
        ('1', 'Baseline'), ('1', 'Ignored (Baseline)'), ('2', 'Pending'), ('3', 'Pending')]
    assert flyway(db, version=version, command='baseline', baseline_version='1')['changed'] is False

    migrated = flyway(db, version=version)
    assert names(migrated['applied']) == ['V2__customers.sql', 'V3__orders.sql']
    assert [r[3] for r in history(stack, db)] == ['BASELINE', 'SQL', 'SQL']


@pytest.mark.parametrize('version', VERSIONS)
def test_undo_needs_a_paid_edition(flyway, project, make_db, version):
    project(V1__customers=V1)
    db = make_db('fw', rows=None)
    flyway(db, version=version)
    result = flyway(db, version=version, command='undo')
    assert_clear_failure(result, 'flyway undo needs a paid edition (Flyway Teams/Enterprise', 'restoring the '
                         'pre-migration backup')
    assert result['changed'] is False
    planned = flyway(db, check=True, version=version, command='undo')
    assert planned['changed'] is True and names(planned['applied']) == ['V1__customers.sql']


def test_roll_back_by_hand_and_re_apply(flyway, project, make_db, stack):
    """Community rollback as the runbooks do it: a rollback script, its history row removed, then migrate again."""
    project(V1__customers=V1, V2__email=V2, V3__orders=V3)
    db = make_db('fw', rows=None)
    assert flyway(db)['schema_version'] == '3'
    sql(stack, db, "DROP TABLE orders; DELETE FROM flyway_schema_history WHERE version = '3'")
    rolled_back = flyway(db, command='info')
    assert rolled_back['schema_version'] == '2' and names(rolled_back['pending']) == ['V3__orders.sql']
    reapplied = flyway(db)
    assert reapplied['changed'] is True and names(reapplied['applied']) == ['V3__orders.sql']
    assert table_exists(stack, db, 'orders')
    down = flyway(db, target='1')
    assert down['changed'] is False and down['schema_version'] == '3', 'migrate never goes back'


def test_postgres_url_and_config_file(flyway, project, make_db, stack, tmp_path):
    project(V1__customers=V1)
    db = make_db('fw', rows=None)
    url = 'postgres://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                         stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)
    result = flyway(db, url=url, user=None, password=None)
    assert result['changed'] is True, result
    conf = tmp_path / 'flyway-prod.conf'
    conf.write_text('flyway.url=jdbc:postgresql://%s:%s/%s\nflyway.user=%s\nflyway.locations=filesystem:%s\n'
                    % (stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db, stack['RUNBOOK_PG_USER'], project.path))
    conf.chmod(0o600)
    from_conf = flyway(db, url=None, user=None, locations=[], config_files=['flyway-prod.conf'],
                       working_dir=str(tmp_path), command='info')
    assert from_conf.get('schema_version') == '1', from_conf['msg']


def test_unknown_target_version_is_flyways_clear_error(flyway, project, make_db):
    project(V1__customers=V1)
    db = make_db('fw', rows=None)
    result = flyway(db, target='V99')
    assert_clear_failure(result, 'No migration with a target version 99 could be found')


@pytest.mark.slow
def test_bad_inputs_fail_clearly(flyway, project, make_db, stack, tmp_path):
    project(V1__customers=V1)
    db = make_db('fw', rows=None)
    garbage = write_script(tmp_path / 'garbage', '#!/bin/sh\necho "{not json"\nexit 0\n')
    text_only = write_script(tmp_path / 'textonly', '#!/bin/sh\necho "Flyway OSS Edition"\necho "ERROR: boom" >&2\n'
                                                    'exit 1\n')
    no_java = write_script(tmp_path / 'nojava', '#!/bin/sh\necho "/opt/flyway/flyway: 1: exec: java: not found" >&2\n'
                                                'exit 127\n')
    not_executable = tmp_path / 'flyway-noexec'
    not_executable.write_text('#!/bin/sh\n')
    not_executable.chmod(stat.S_IRUSR | stat.S_IWUSR)
    cases = [
        (dict(executable='flyway-not-installed'), ["executable 'flyway-not-installed' was not found in PATH"]),
        (dict(executable=str(not_executable)), ['is not executable']),
        (dict(locations=[str(tmp_path / 'missing')]), ['locations: directory', 'does not exist']),
        (dict(url='mysql://u:secretpw@h/db'), ['url must be a JDBC URL']),
        (dict(url='jdbc:postgresql://127.0.0.1:1/%s' % db), ['could not connect to the database', 'refused']),
        (dict(password='wrong-password'), ['could not connect to the database', 'password authentication failed']),
        (dict(executable=garbage), ['printed malformed JSON', '{not json']),
        (dict(executable=text_only), ['printed no JSON', 'exit code 1', 'ERROR: boom']),
        (dict(executable=no_java), ['Flyway needs Java']),
        (dict(extra_args=['-password=oops']), ['extra_args must not set -password', 'password option']),
        (dict(extra_args=['migrate']), ['is not a flag']),
        (dict(target='Vabc'), ["target 'Vabc' is not a Flyway version"]),
        (dict(command='repair', target='2'), ['target does not apply to command=repair']),
        (dict(baseline_version='2'), ['baseline_version applies to command=baseline']),
        (dict(url=None), ['no database given', 'db_url', 'config_files set flyway.url']),
        (dict(working_dir=str(tmp_path / 'nowhere')), ["working_dir '%s' does not exist" % (tmp_path / 'nowhere')]),
    ]
    for args, fragments in cases:
        result = flyway(db, **args)
        assert_clear_failure(result, *fragments)
        assert 'Traceback (most recent call last)' not in result.get('exception', ''), (args, result['exception'])
        for secret in (stack['RUNBOOK_PG_PASSWORD'], 'secretpw', 'wrong-password', 'oops'):
            assert secret not in json.dumps({k: v for k, v in result.items() if k != 'invocation'}), (args, secret)
    assert not table_exists(stack, db, 'flyway_schema_history')


def test_locations_without_migrations_fail_naming_locations(flyway, project, make_db, stack, tmp_path):
    """An empty or missing migrations folder is nearly always a wrong path: no "nothing pending" (issue 15, item 10)."""
    db = make_db('fw', rows=None)
    empty = tmp_path / 'empty'
    (empty / 'nested').mkdir(parents=True)
    (empty / '.gitkeep').write_text('')
    (empty / 'README.md').write_text('migrations go here\n')
    missing = tmp_path / 'missing'
    for command in ('migrate', 'info', 'validate'):
        for folder in (empty, 'filesystem:%s' % empty):
            result = flyway(db, command=command, locations=[str(folder)])
            assert_clear_failure(result, 'locations', str(empty), 'no migrations', 'allow_empty')
            assert result['executed_commands'] == []
        assert_clear_failure(flyway(db, command=command, locations=[str(missing)]), 'locations', str(missing),
                             'allow_empty')
    # A migration in any of the locations (here a subfolder, which Flyway scans too) is enough.
    (empty / 'nested' / 'V1__customers.sql').write_text(V1)
    checked = flyway(db, check=True, locations=[project.path, str(empty)])
    assert not checked.get('failed'), checked
    assert [e['version'] for e in checked['applied']] == ['1'], checked['applied']
    # A brand-new project opts out: Flyway runs and finds nothing to do.
    opted = flyway(db, locations=[project.path], allow_empty=True)
    assert not opted.get('failed'), opted
    assert opted['changed'] is False and opted['applied'] == []
    assert not table_exists(stack, db, 'customers')


def test_password_never_on_a_command_line_nor_in_results(flyway, project, make_db, stack):
    project(V1__slow='SELECT pg_sleep(1.5);\n' + V1)
    db = make_db('fw', rows=None)
    password = stack['RUNBOOK_PG_PASSWORD']
    url = 'postgres://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], password, stack['RUNBOOK_PG_HOST'],
                                         stack['RUNBOOK_PG_PORT'], db)
    with ProcessWatcher(DOUBLE) as watcher:
        result = flyway(db, url=url, user=None, password=None)
    assert result['changed'] is True, result
    assert watcher.seen, 'the Flyway double was never observed running; the test could not check its argv'
    leaks = [cmd for cmd in watcher.seen.values() if password.encode() in cmd or b'jdbc:' in cmd]
    assert leaks == []
    dumped = json.dumps(result)
    assert password not in dumped
    assert all(password not in c and 'jdbc:' not in c for c in result['executed_commands']), result['executed_commands']


# Field order of the JSON Flyway prints, read from the Java classes Gson serializes (subclass fields first) at tags
# flyway-9.22.3, flyway-10.22.0 and flyway-11.20.3: this keeps the double honest.
HTML_TAIL = ['timestamp', 'operation', 'exception', 'licenseFailed']
INFO_KEYS = ['schemaVersion', 'schemaName', 'migrations', 'flywayVersion', 'database', 'allSchemasEmpty'] + HTML_TAIL
INFO_ITEM_9 = ['category', 'version', 'rawVersion', 'description', 'type', 'installedOnUTC', 'state', 'undoable',
               'filepath', 'undoFilepath', 'installedBy', 'executionTime']
INFO_ITEM_10 = INFO_ITEM_9[:-1] + ['shouldExecuteExpression', 'executionTime']
MIGRATE_9 = ['initialSchemaVersion', 'targetSchemaVersion', 'schemaName', 'migrations', 'migrationsExecuted', 'success',
             'flywayVersion', 'database', 'warnings']
MIGRATE_10 = MIGRATE_9 + ['databaseType']
SHAPES = {
    '9': dict(info_item=INFO_ITEM_9, migrate=MIGRATE_9 + HTML_TAIL,
              migrate_error=['errorCode', 'message', 'stackTrace', 'lineNumber', 'path'],
              connection_error=['errorCode', 'message', 'stackTrace', 'lineNumber', 'path']),
    '10': dict(info_item=INFO_ITEM_10, migrate=MIGRATE_10 + HTML_TAIL,
               migrate_error=['errorCode', 'message', 'stackTrace', 'lineNumber', 'path', 'cause'],
               connection_error=['errorCode', 'message', 'stackTrace', 'lineNumber', 'path', 'cause']),
    '11': dict(info_item=INFO_ITEM_10, migrate=MIGRATE_10 + HTML_TAIL,
               migrate_error=['errorCode', 'sqlState', 'sqlErrorCode', 'message', 'lineNumber', 'path', 'cause'],
               connection_error=['errorCode', 'subErrorCode', 'sqlState', 'sqlErrorCode', 'message', 'cause']),
}


@pytest.mark.parametrize('version', VERSIONS)
def test_the_double_prints_flyways_json_shapes(project, make_db, stack, version, tmp_path):
    project(V1__customers=V1, V2__broken=BROKEN)
    db = make_db('fw', rows=None)
    env = dict(os.environ, FLYWAY_DOUBLE_VERSION=version, FLYWAY_USER=stack['RUNBOOK_PG_USER'],
               FLYWAY_PASSWORD=stack['RUNBOOK_PG_PASSWORD'],
               FLYWAY_URL='jdbc:postgresql://%s:%s/%s' % (stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db))

    def flyway(*args, **extra):
        proc = subprocess.run([sys.executable, DOUBLE, '-outputType=json', '-locations=filesystem:%s' % project.path]
                              + list(args), env=dict(env, **extra), capture_output=True, text=True, check=False)
        return proc.returncode, json.loads(proc.stdout)

    shape = SHAPES[version]
    rc, info = flyway('info')
    assert rc == 0 and list(info) == INFO_KEYS and list(info['migrations'][0]) == shape['info_item']
    rc, failed = flyway('migrate')
    assert rc == 1 and list(failed) == ['error'] + shape['migrate']
    assert list(failed['error']) == shape['migrate_error']
    assert failed['success'] is False and [m['version'] for m in failed['migrations']] == ['1']
    rc, validated = flyway('validate')
    assert rc == 0 and validated['validationSuccessful'] is False
    assert list(validated) == ['errorDetails', 'invalidMigrations', 'validationSuccessful', 'validateCount',
                               'flywayVersion', 'database', 'warnings', 'operation']
    rc, refused = flyway('info', FLYWAY_URL='jdbc:postgresql://127.0.0.1:1/%s' % db)
    assert rc == 1 and list(refused) == ['error'] and list(refused['error']) == shape['connection_error']
    assert refused['error']['errorCode'] == 'DB_CONNECTION'
    rc, undo = flyway('undo')
    assert rc == (1 if version == '9' else 35) and list(undo) == ['error']


# -- state=rolled_back: the project's own rollback scripts (runbook 002: rollback_scripts/rollback_V3_013.sql) ----
V3_012 = 'CREATE TABLE work_orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id));\n'
V3_013 = 'CREATE INDEX work_orders_customer ON work_orders (customer_id);\nALTER TABLE customers ADD COLUMN tier text;\n'
DOWN_3_013 = 'DROP INDEX work_orders_customer;\nALTER TABLE customers DROP COLUMN tier;\n'
DOWN_3_012 = 'DROP TABLE work_orders;\n'


def java_hash(text):
    """Java's String.hashCode, written here apart from the module's: the key must be the one Flyway computes."""
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def versions(stack, db):
    return [row[1] for row in history(stack, db)]


@pytest.fixture
def rollback_project(project, tmp_path):
    """V1, V2, V3_012, V3_013 and runbook 002's rollback_scripts folder (rollback_V3_013.sql, rollback_V3_012.sql)."""
    project(V1__customers=V1, V2__email=V2, V3_012__work_orders=V3_012, V3_013__work_order_index=V3_013)
    scripts = tmp_path / 'rollback_scripts'
    scripts.mkdir()
    (scripts / 'rollback_V3_013.sql').write_text(DOWN_3_013)
    (scripts / 'rollback_V3_012.sql').write_text(DOWN_3_012)
    return scripts


def test_rolled_back_runs_the_projects_rollback_scripts_newest_first_under_flyways_lock(
        flyway, rollback_project, make_db, stack, tmp_path):
    db = make_db('fw', rows=None)
    assert flyway(db, state='deployed')['schema_version'] == '3.013'
    before = history(stack, db)
    down = dict(state='rolled_back', working_dir=str(tmp_path), down_scripts_path='rollback_scripts')

    # Refusals before anything runs: an unknown target (a typo), a missing down script.
    typo = flyway(db, target='V3_11', **down)
    assert_clear_failure(typo, "target 'V3_11' is neither in the schema history nor among the migration files")
    (rollback_project / 'rollback_V3_012.sql').rename(rollback_project / 'kept_aside.sql')
    missing = flyway(db, target='V2', **down)
    assert_clear_failure(missing, 'no down script for V3_012__work_orders.sql')
    assert 'Nothing was rolled back' in missing['msg'] and missing['changed'] is False
    assert history(stack, db) == before and table_exists(stack, db, 'work_orders')
    (rollback_project / 'kept_aside.sql').rename(rollback_project / 'rollback_V3_012.sql')

    # Check mode: the plan, nothing run.
    planned = flyway(db, check=True, target='V2', **down)
    assert planned['changed'] is True, planned
    assert [(e['version'], os.path.basename(e['down_script']), e['duration']) for e in planned['rolled_back']] == [
        ('3.013', 'rollback_V3_013.sql', None), ('3.012', 'rollback_V3_012.sql', None)]
    assert (planned['schema_version_before'], planned['schema_version']) == ('3.013', '2')
    assert history(stack, db) == before

    # While a Flyway run holds Flyway's own lock on this history table, nothing runs.
    key = 77431708279161 + java_hash('"public"."flyway_schema_history"')
    import psycopg2
    holder = psycopg2.connect(host=stack['RUNBOOK_PG_HOST'], port=stack['RUNBOOK_PG_PORT'], dbname=db,
                              user=stack['RUNBOOK_PG_USER'], password=stack['RUNBOOK_PG_PASSWORD'])
    try:
        holder.autocommit = True
        holder.cursor().execute('SELECT pg_advisory_lock(%s)', (key,))
        locked = flyway(db, target='V2', timeout=1, **down)
        assert_clear_failure(locked, 'pg_advisory_lock(%d)' % key, 'nothing was changed')
        assert locked['changed'] is False and locked['rolled_back'] == []
        assert history(stack, db) == before
    finally:
        holder.close()

    rolled = flyway(db, target='V2', **down)
    assert rolled['changed'] is True and rolled['command'] == 'rolled_back', rolled
    assert [e['script'] for e in rolled['rolled_back']] == ['V3_013__work_order_index.sql', 'V3_012__work_orders.sql']
    assert all(e['duration'] >= 0 for e in rolled['rolled_back'])
    assert rolled['executed_commands'] == [], 'the down path runs no Flyway command'
    assert versions(stack, db) == ['1', '2'] and not table_exists(stack, db, 'work_orders')
    assert flyway(db, target='V2', **down)['changed'] is False, 'rolling back again changes nothing'

    # Flyway itself sees V3_012 and V3_013 as pending again and applies them (its validate accepts the history).
    info = flyway(db, state='status')
    assert info['schema_version'] == '2'
    assert names(info['pending']) == ['V3_012__work_orders.sql', 'V3_013__work_order_index.sql']
    assert flyway(db)['schema_version'] == '3.013' and table_exists(stack, db, 'work_orders')


def test_a_failing_down_script_leaves_its_migration_applied_and_a_rerun_finishes(
        flyway, rollback_project, make_db, stack, tmp_path):
    db = make_db('fw', rows=None)
    flyway(db)
    (rollback_project / 'rollback_V3_012.sql').write_text('DROP TABLE work_orders;\nDROP TABLE no_such_table;\n')
    down = dict(state='rolled_back', working_dir=str(tmp_path), down_scripts_path='rollback_scripts', target='2')
    failed = flyway(db, **down)
    assert_clear_failure(failed, 'rollback_V3_012.sql', 'no_such_table', 'still applied')
    # 3.013 was rolled back in its own transaction; 3.012's transaction was rolled back whole.
    assert [e['version'] for e in failed['rolled_back']] == ['3.013']
    assert versions(stack, db) == ['1', '2', '3.012'] and table_exists(stack, db, 'work_orders')
    assert failed['schema_version'] == '3.012'
    (rollback_project / 'rollback_V3_012.sql').write_text(DOWN_3_012)
    rerun = flyway(db, **down)
    assert [e['version'] for e in rerun['rolled_back']] == ['3.012']
    assert versions(stack, db) == ['1', '2']


def test_flyway_undo_naming_steps_and_the_options_prisma_migrate_has(flyway, project, make_db, stack, tmp_path):
    """U<version>__*.sql beside the migrations (Flyway's undo naming), steps, and login_host/db/login_user/
    login_password/db_schema as prisma_migrate names them; the database can also come from a .conf file."""
    project(V1__customers=V1, V2__email=V2, U2__email='ALTER TABLE customers DROP COLUMN email;\n'
            'DROP FUNCTION touch();\n')
    db = make_db('fw', rows=None)
    connection = dict(url=None, user=None, password=None, login_host=stack['RUNBOOK_PG_HOST'],
                      login_port=int(stack['RUNBOOK_PG_PORT']), database=db, login_user=stack['RUNBOOK_PG_USER'],
                      login_password=stack['RUNBOOK_PG_PASSWORD'], db_schema='public')
    deployed = flyway(db, state='deployed', **connection)
    assert deployed.get('schema_version') == '2', deployed['msg']
    rolled = flyway(db, state='rolled_back', steps=1, **connection)
    assert [os.path.basename(e['down_script']) for e in rolled['rolled_back']] == ['U2__email.sql'], rolled
    assert versions(stack, db) == ['1']
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(rolled)

    flyway(db, **connection)
    conf = tmp_path / 'flyway-prod.conf'
    conf.write_text('flyway.url=jdbc:postgresql://%s:%s/%s\nflyway.user=%s\nflyway.password=%s\n'
                    % (stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db, stack['RUNBOOK_PG_USER'],
                       stack['RUNBOOK_PG_PASSWORD']))
    conf.chmod(0o600)
    from_conf = flyway(db, url=None, user=None, password=None, state='rolled_back', migration='V2',
                       config_files=[str(conf)])
    assert [e['version'] for e in from_conf['rolled_back']] == ['2'], from_conf
    assert versions(stack, db) == ['1']
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(from_conf)


def process_with_local_port(port):
    """The pid of the process holding the TCP socket whose local port is port (from /proc, no extra tools)."""
    inodes = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(':', 1)[1], 16) == port:
                    inodes.add('socket:[%s]' % fields[9])
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if any(os.readlink('/proc/%s/fd/%s' % (pid, fd)) in inodes for fd in os.listdir('/proc/%s/fd' % pid)):
                return int(pid)
        except OSError:
            continue
    return None


def test_a_rollback_killed_half_way_is_finished_by_running_it_again(flyway, rollback_project, make_db, stack, tmp_path):
    """SIGKILL the module while the second down script runs: the first migration stays rolled back, the second is
    untouched (its transaction died with the session), Flyway's lock is free again, and a re-run finishes."""
    import signal
    import threading
    import time
    db = make_db('fw', rows=None)
    flyway(db)
    (rollback_project / 'rollback_V3_012.sql').write_text('SELECT pg_sleep(60);\n' + DOWN_3_012)
    down = dict(state='rolled_back', working_dir=str(tmp_path), down_scripts_path='rollback_scripts', target='2')
    killed = []

    def kill_during_the_second_script():
        # Ansible runs modules from the main thread only (signal handlers), so the killer is the thread. It kills the
        # process at the client end of the session running the sleep, not other tests' modules.
        deadline = time.time() + 30
        while time.time() < deadline and not killed:
            ports = sql(stack, db, "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND query LIKE %s",
                        (db, 'SELECT pg_sleep(60)%'))
            if ports:
                pid = process_with_local_port(ports[0][0])
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.2)
    killer = threading.Thread(target=kill_during_the_second_script)
    killer.start()
    try:
        outcome = flyway(db, **down)
    finally:
        killer.join(40)
    assert killed, 'the module was not found running its second down script: %s' % outcome
    assert outcome.get('failed'), outcome
    # The server notices the dead client when pg_sleep returns, then rolls the transaction back and frees the lock;
    # ending that orphaned session now saves the test the wait.
    sql(stack, db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                   "pg_backend_pid() AND application_name = 'runbook.deploy'", (db,))
    assert versions(stack, db) == ['1', '2', '3.012'] and table_exists(stack, db, 'work_orders')
    (rollback_project / 'rollback_V3_012.sql').write_text(DOWN_3_012)
    rerun = flyway(db, timeout=10, **down)
    assert [e['version'] for e in rerun['rolled_back']] == ['3.012'], rerun
    assert versions(stack, db) == ['1', '2'] and not table_exists(stack, db, 'work_orders')


def test_what_to_roll_back_is_chosen_again_once_flyways_lock_is_held(
        flyway, rollback_project, make_db, stack, tmp_path):
    """A flyway migrate holding the lock applies V3_014 while the rollback waits: steps=1 then rolls back V3_014,
    the newest, not the V3_013 that was newest when the task started."""
    import threading
    import time
    import psycopg2
    db = make_db('fw', rows=None)
    flyway(db)
    (rollback_project / 'rollback_V3_014.sql').write_text('DROP TABLE audit_log;\n')
    key = 77431708279161 + java_hash('"public"."flyway_schema_history"')
    holder = psycopg2.connect(host=stack['RUNBOOK_PG_HOST'], port=stack['RUNBOOK_PG_PORT'], dbname=db,
                              user=stack['RUNBOOK_PG_USER'], password=stack['RUNBOOK_PG_PASSWORD'])
    holder.autocommit = True
    holder.cursor().execute('SELECT pg_advisory_lock(%s)', (key,))

    def migrate_meanwhile():
        time.sleep(2)  # the rollback has read the history and waits for the lock
        cursor = holder.cursor()
        cursor.execute('CREATE TABLE audit_log (id int)')
        cursor.execute("INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, "
                       "checksum, installed_by, execution_time, success) VALUES (6, '3.014', 'audit log', 'SQL', "
                       "'V3_014__audit_log.sql', 0, 'flyway', 1, true)")
        cursor.execute('SELECT pg_advisory_unlock(%s)', (key,))
    meanwhile = threading.Thread(target=migrate_meanwhile)
    meanwhile.start()
    try:
        rolled = flyway(db, state='rolled_back', steps=1, timeout=30, working_dir=str(tmp_path),
                        down_scripts_path='rollback_scripts')
    finally:
        meanwhile.join(30)
        holder.close()
    assert [e['version'] for e in rolled['rolled_back']] == ['3.014'], rolled
    assert (rolled['schema_version_before'], rolled['schema_version']) == ('3.014', '3.013')
    assert versions(stack, db)[-1] == '3.013' and not table_exists(stack, db, 'audit_log')


def test_refusals_before_anything_runs_and_the_schema_of_the_history(flyway, rollback_project, make_db, stack,
                                                                     tmp_path):
    db = make_db('fw', rows=None)
    sql(stack, db, "CREATE SCHEMA app; CREATE FUNCTION public.drop_work_orders() RETURNS void LANGUAGE sql "
                   "AS 'DROP TABLE app.work_orders'")
    assert flyway(db, db_schema='app')['schema_version'] == '3.013'
    app_history = sql(stack, db, 'SELECT version FROM app.flyway_schema_history ORDER BY installed_rank')
    down = dict(state='rolled_back', working_dir=str(tmp_path), down_scripts_path='rollback_scripts', db_schema='app')

    # The history table is in app: looking for it in public is an error, not "nothing to roll back".
    assert_clear_failure(flyway(db, target='2', **dict(down, db_schema='public')),
                         'there is no flyway_schema_history in schema public')
    # A folder holding the migrations themselves would run V3_013__*.sql as its own down script.
    assert_clear_failure(flyway(db, target='2', **dict(down, down_scripts_path=os.path.dirname(project_dir(tmp_path)))),
                         'overlaps the migration location', 'Nothing was changed')
    assert_clear_failure(flyway(db, migration='V3_14', **down), "migration 'V3_14' is neither in the schema history")
    # A psql-style script with its own BEGIN/COMMIT would commit half a rollback: refused before anything runs.
    (rollback_project / 'rollback_V3_012.sql').write_text('BEGIN;\n' + DOWN_3_012 + 'COMMIT;\n')
    wrapped = flyway(db, target='2', **down)
    assert_clear_failure(wrapped, 'rollback_V3_012.sql', 'controls transactions itself (BEGIN)')
    assert wrapped['rolled_back'] == [] and wrapped['changed'] is False
    assert sql(stack, db, 'SELECT version FROM app.flyway_schema_history ORDER BY installed_rank') == app_history

    # The down script runs with app first on the search path and the connection's own after it, as Flyway's.
    (rollback_project / 'rollback_V3_012.sql').write_text('SELECT public.drop_work_orders();\n')
    (rollback_project / 'rollback_V3_013.sql').write_text('DROP INDEX work_orders_customer;\n'
                                                          'ALTER TABLE customers DROP COLUMN tier;\n')
    toml = tmp_path / 'flyway.toml'
    toml.write_text('[flyway]\n')
    rolled = flyway(db, target='2', config_files=[str(toml)], **down)
    assert [e['version'] for e in rolled['rolled_back']] == ['3.013', '3.012'], rolled
    assert sql(stack, db, 'SELECT version FROM app.flyway_schema_history ORDER BY installed_rank') == [('1',), ('2',)]


def project_dir(tmp_path):
    return str(tmp_path / 'db' / 'migrations')


def test_require_down_scripts_refuses_before_applying_anything(flyway, rollback_project, make_db, stack, tmp_path):
    """Runbook 002 "Rollback scripts prepared": a pending migration without its rollback script stops the deployment
    before anything is applied (also predicted by check mode); with every script there, it deploys."""
    db = make_db('fw', rows=None)
    need = dict(require_down_scripts=True, working_dir=str(tmp_path), down_scripts_path='rollback_scripts')
    for check in (True, False):
        refused = flyway(db, check=check, **need)
        assert_clear_failure(refused, 'no down script for the pending migration(s) V1__customers.sql, V2__email.sql',
                             'nothing was applied')
        assert not table_exists(stack, db, 'flyway_schema_history')
    (rollback_project / 'rollback_V1.sql').write_text('DROP TABLE customers;\n')
    (rollback_project / 'rollback_V2.sql').write_text('ALTER TABLE customers DROP COLUMN email;\n')
    assert flyway(db, **need)['schema_version'] == '3.013'
