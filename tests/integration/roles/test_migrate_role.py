"""roles/migrate: migrate_on_failure (issue 15, item 11), through ansible-playbook with the real Prisma CLI.

A migration deletes 50 of 100 rows, then fails. Prisma's JavaScript engine has committed the DELETE by then.
With migrate_on_failure=restore the role restores the backup runbook.deploy.backup took earlier in the play
(pg_backup's clean restore) and still fails; with the default (stop) the database keeps what was committed.
Either way the failure names the committed statements.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from helpers import REPO, play_on_localhost, sql

FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'prisma')
ITEMS = '20261105000000_create_items'
PURGE = '20261106000000_purge_items'
DELETE = 'DELETE FROM "items" WHERE "id" <= 50'
UPDATE = 'UPDATE "items" SET "name" = upper("name")'
INSERT = 'INSERT INTO "items" ("id", "name") VALUES (51, \'duplicate\')'
INDEX = 'CREATE INDEX "items_name_idx" ON "items" ("name")'


# The Prisma CLI patched to run offline (tests/scripts/prisma_setup.py), once per session: conftest.py.
pytestmark = pytest.mark.usefixtures('prisma_offline_setup')


def play(tmp_path, stack, db, project, backup=False, **migrate_vars):
    """Run [backup role,] migrate role; return (rc, what the rescue saw: msg and migrate_result, output)."""
    login = dict(host=stack['RUNBOOK_PG_HOST'], port=int(stack['RUNBOOK_PG_PORT']), user=stack['RUNBOOK_PG_USER'],
                 password=stack['RUNBOOK_PG_PASSWORD'])
    report = tmp_path / 'report.json'
    if report.exists():
        report.unlink()
    tasks = []
    if backup:
        tasks.append({'name': 'backup', 'ansible.builtin.include_role': {'name': 'runbook.deploy.backup'}, 'vars': {
            'backup_login_host': login['host'], 'backup_login_port': login['port'],
            'backup_login_user': login['user'], 'backup_login_password': login['password'], 'backup_db': db,
            'backup_dest': str(tmp_path / 'backups'), 'backup_keep': 0, 'backup_max_age': ''}})
    role_vars = dict(migrate_tool='prisma', migrate_project_path=str(project), migrate_db_login_host=login['host'],
                     migrate_db_login_port=login['port'], migrate_db_login_user=login['user'],
                     migrate_db_login_password=login['password'], migrate_db_db=db,
                     migrate_restore_dest=str(tmp_path / 'restore'))
    role_vars.update(migrate_vars)
    tasks.append({'name': 'migrate', 'ansible.builtin.include_role': {'name': 'runbook.deploy.migrate'},
                  'vars': role_vars})
    playbook = [{'name': 'migrate', 'hosts': 'localhost', 'gather_facts': False, 'tasks': [{
        'name': 'deploy the database', 'block': tasks, 'rescue': [
            {'name': 'report', 'ansible.builtin.copy': {
                'dest': str(report), 'mode': '0600',
                'content': "{{ {'msg': ansible_failed_result.msg | default(''), "
                           "'task': ansible_failed_task.name, 'result': migrate_result | default({})} | to_json }}"}},
            {'name': 'stop', 'ansible.builtin.fail': {'msg': 'the database phase failed'}}]}]}]
    path = tmp_path / 'play.yml'
    path.write_text(yaml.safe_dump(playbook))
    proc = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                           str(path)], capture_output=True, text=True, check=False, timeout=240)
    seen = json.loads(report.read_text()) if report.exists() else None
    return proc.returncode, seen, proc.stdout + proc.stderr


def items(stack, db):
    return sql(stack, db, 'SELECT count(*), min(id) FROM items')[0]


def purge_rows(stack, db):
    return sql(stack, db, 'SELECT finished_at IS NOT NULL FROM _prisma_migrations WHERE migration_name = %s', (PURGE,))


@pytest.mark.slow
def test_failed_migration_restores_the_deployment_backup_or_keeps_what_was_committed(
        tmp_path, stack, make_db, run_module):
    db = make_db('migrate_role', rows=None)
    project = tmp_path / 'app'
    shutil.copytree(os.path.join(FIXTURES, 'app'), str(project))
    os.symlink(os.path.join(REPO, 'node_modules'), str(project / 'node_modules'))
    migrations = project / 'prisma' / 'migrations'
    shutil.copytree(os.path.join(FIXTURES, 'purge_migrations', ITEMS), str(migrations / ITEMS))
    # The release before: its migrations applied (natively, to save a CLI run), 100 items.
    url = 'postgresql://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                           stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)
    before = run_module('runbook.deploy.prisma_migrate', state='deployed', engine='native', project_path=str(project),
                        db_url=url)
    assert not before.get('failed'), before
    assert items(stack, db) == (100, 1)
    shutil.copytree(os.path.join(FIXTURES, 'purge_migrations', PURGE), str(migrations / PURGE))
    committed = 'committed: [1] %s, [2] %s; failed: [3] %s; not run: [4] %s' % (DELETE, UPDATE, INSERT, INDEX)

    # restore without a backup in the play: refused before anything is migrated.
    rc, seen, out = play(tmp_path, stack, db, project, migrate_on_failure='restore')
    assert rc != 0 and seen, out
    assert "migrate_on_failure=restore needs the deployment's backup" in seen['msg'], seen
    assert 'Nothing was migrated' in seen['msg'] and 'migrate_restore_src' in seen['msg']
    assert items(stack, db) == (100, 1) and purge_rows(stack, db) == []

    # restore: the backup role's backup (backup_taken) comes back, all 100 rows, and the role still fails.
    rc, seen, out = play(tmp_path, stack, db, project, backup=True, migrate_on_failure='restore')
    assert rc != 0 and seen, out
    assert seen['task'] == 'Check that the migrations applied', seen
    assert PURGE in seen['msg'] and committed in seen['msg'], seen['msg']
    assert "migrate_on_failure=restore: the deployment's backup" in seen['msg'] and 'was restored' in seen['msg']
    assert items(stack, db) == (100, 1)
    assert sql(stack, db, 'SELECT count(*) FROM items WHERE name = upper(name)')[0][0] == 0
    assert purge_rows(stack, db) == [], 'the failed migration is undone with the rest: it is pending again'
    result = seen['result']
    assert result['failed'] is True and result['on_failure'] == 'restore'
    assert result['restored_from'].startswith(str(tmp_path / 'backups')) and result['restore_error'] == ''
    assert result['safety_backup'].startswith(str(tmp_path / 'restore')) and os.path.exists(result['safety_backup'])
    assert stack['RUNBOOK_PG_PASSWORD'] not in out

    # stop (the default): the same failure, the committed DELETE and UPDATE stay, and the message says so.
    rc, seen, out = play(tmp_path, stack, db, project)
    assert rc != 0 and seen, out
    assert PURGE in seen['msg'] and committed in seen['msg'], seen['msg']
    assert 'kept as the failed migration left it (migrate_on_failure=stop)' in seen['msg']
    assert items(stack, db) == (50, 51)
    assert purge_rows(stack, db) == [(False,)]
    assert seen['result']['on_failure'] == 'stop' and seen['result']['restored_from'] == ''


def test_flyway_rollback_runs_the_projects_down_scripts_through_flyway_migrate(tmp_path, stack, make_db):
    """tasks_from: rollback with Flyway (runbooks 002/003): to a version, then "what this play applied", with the
    sample app's U<version>__*.sql down scripts, through runbook.deploy.flyway_migrate state=rolled_back (the Flyway
    TEST DOUBLE applies; the down path runs no Flyway command)."""
    db = make_db('migrate_flyway_rb', rows=None)
    project = tmp_path / 'flyway'
    shutil.copytree(os.path.join(REPO, 'sample_app', 'flyway'), str(project))
    results = tmp_path / 'results.json'
    role_vars = dict(migrate_tool='flyway', migrate_project_path=str(project),
                     migrate_flyway_executable=os.path.join(REPO, 'tests', 'doubles', 'flyway', 'flyway'),
                     migrate_db_login_host=stack['RUNBOOK_PG_HOST'], migrate_db_login_port=int(stack['RUNBOOK_PG_PORT']),
                     migrate_db_login_user=stack['RUNBOOK_PG_USER'],
                     migrate_db_login_password=stack['RUNBOOK_PG_PASSWORD'], migrate_db_db=db)

    def step(name, tasks_from='main', **extra):
        return {'name': name,
                'ansible.builtin.include_role': {'name': 'runbook.deploy.migrate', 'tasks_from': tasks_from},
                'vars': dict(role_vars, **extra)}
    playbook = [{'name': 'migrate and roll back', 'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        step('apply V1 to V3'),
        step('back to V1', 'rollback', migrate_rollback_to='V1'),
        {'name': 'keep', 'ansible.builtin.set_fact': {'to_version': '{{ migrate_rollback_result }}'}},
        step('apply V2 and V3 again'),
        step('undo what this play applied', 'rollback', migrate_rollback_to=''),
        {'name': 'write', 'ansible.builtin.copy': {
            'dest': str(results), 'mode': '0600',
            'content': '{{ {"to_version": to_version, "applied": migrate_result.applied, '
                       '"undone": migrate_rollback_result} | to_json }}'}}]}]
    rc, output = play_on_localhost(tmp_path, playbook)
    assert rc == 0, output[-6000:]
    seen = json.loads(results.read_text())
    assert seen['to_version']['rolled_back'] == ['V3__add_case_status.sql', 'V2__add_sync_queue_and_feature_flags.sql']
    assert seen['to_version']['current_version'] == '1'
    assert seen['applied'] == ['V2__add_sync_queue_and_feature_flags.sql', 'V3__add_case_status.sql']
    assert seen['undone']['rolled_back'] == ['V3__add_case_status.sql', 'V2__add_sync_queue_and_feature_flags.sql']
    assert sql(stack, db, 'SELECT version FROM flyway_schema_history ORDER BY installed_rank') == [('1',)]
    assert sql(stack, db, "SELECT count(*) FROM pg_tables WHERE tablename IN ('sync_queue', 'feature_flags')") == [(0,)]
    assert stack['RUNBOOK_PG_PASSWORD'] not in output


def test_migrate_require_down_scripts_stops_before_anything_is_applied(tmp_path, stack, make_db, run_module):
    """Runbook 002 "Rollback scripts prepared": V1 and V2 deployed, V3 arrives without its down script - the run
    stops before applying it."""
    db = make_db('migrate_flyway_need', rows=None)
    project = tmp_path / 'flyway'
    shutil.copytree(os.path.join(REPO, 'sample_app', 'flyway'), str(project))
    double = os.path.join(REPO, 'tests', 'doubles', 'flyway', 'flyway')
    held = tmp_path / 'V3__add_case_status.sql'
    shutil.move(str(project / 'sql' / held.name), str(held))
    deployed = run_module('runbook.deploy.flyway_migrate', executable=double, working_dir=str(project), locations=['sql'],
                          login_host=stack['RUNBOOK_PG_HOST'], login_port=int(stack['RUNBOOK_PG_PORT']),
                          login_user=stack['RUNBOOK_PG_USER'], login_password=stack['RUNBOOK_PG_PASSWORD'], db=db)
    assert deployed.get('schema_version') == '2', deployed
    shutil.move(str(held), str(project / 'sql' / held.name))
    (project / 'undo' / 'U3__add_case_status.sql').unlink()
    role_vars = dict(migrate_tool='flyway', migrate_project_path=str(project), migrate_require_down_scripts=True,
                     migrate_flyway_executable=double,
                     migrate_db_login_host=stack['RUNBOOK_PG_HOST'], migrate_db_login_port=int(stack['RUNBOOK_PG_PORT']),
                     migrate_db_login_user=stack['RUNBOOK_PG_USER'],
                     migrate_db_login_password=stack['RUNBOOK_PG_PASSWORD'], migrate_db_db=db)
    playbook = [{'name': 'migrate', 'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'name': 'migrate', 'ansible.builtin.include_role': {'name': 'runbook.deploy.migrate'}, 'vars': role_vars}]}]
    rc, output = play_on_localhost(tmp_path, playbook)
    assert rc != 0, output[-4000:]
    assert 'no down script for the pending migration(s) V3__add_case_status.sql' in output, output[-4000:]
    assert sql(stack, db, 'SELECT version FROM flyway_schema_history ORDER BY installed_rank') == [('1',), ('2',)]
    assert stack['RUNBOOK_PG_PASSWORD'] not in output


def test_migrate_require_down_scripts_with_prisma(tmp_path, stack, make_db, run_module):
    """The same gate with Prisma (each pending migration's down.sql), on a database with history (a first deployment
    goes back by restoring the backup, so it is not asked for down scripts)."""
    db = make_db('migrate_prisma_need', rows=None)
    project = tmp_path / 'app'
    shutil.copytree(os.path.join(FIXTURES, 'app'), str(project))
    migrations = project / 'prisma' / 'migrations'
    newest = sorted(p.name for p in migrations.iterdir() if p.is_dir())[-1]
    held = tmp_path / 'held'
    shutil.move(str(migrations / newest), str(held))
    url = 'postgresql://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                           stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)
    assert not run_module('runbook.deploy.prisma_migrate', state='deployed', engine='native', project_path=str(project),
                          db_url=url).get('failed')
    shutil.move(str(held), str(migrations / newest))
    (migrations / newest / 'down.sql').write_text('BEGIN;\nSELECT 1;\nCOMMIT;\n')
    role_vars = dict(migrate_tool='prisma', migrate_prisma_engine='native', migrate_project_path=str(project),
                     migrate_require_down_scripts=True, migrate_db_login_host=stack['RUNBOOK_PG_HOST'],
                     migrate_db_login_port=int(stack['RUNBOOK_PG_PORT']), migrate_db_login_user=stack['RUNBOOK_PG_USER'],
                     migrate_db_login_password=stack['RUNBOOK_PG_PASSWORD'], migrate_db_db=db)
    plays = [{'name': 'migrate', 'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'name': 'migrate', 'ansible.builtin.include_role': {'name': 'runbook.deploy.migrate'}, 'vars': role_vars}]}]
    rc, output = play_on_localhost(tmp_path, plays)
    # A down script the rollback would refuse (its own BEGIN/COMMIT) is refused now, before anything is applied.
    assert rc != 0, output[-4000:]
    assert 'require_down_scripts' in output and 'controls transactions itself (BEGIN)' in output, output[-4000:]
    assert sql(stack, db, 'SELECT count(*) FROM _prisma_migrations WHERE migration_name = %s', (newest,)) == [(0,)]
    (migrations / newest / 'down.sql').unlink()
    rc, output = play_on_localhost(tmp_path, plays)
    assert rc != 0 and 'no down script for the pending migration(s) %s' % newest in output, output[-4000:]
