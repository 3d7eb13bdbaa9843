"""roles/rollback with rollback_database=migration_tool when migrate_project_path is templated on runbook_version
(<deploy_to>/releases/{{ runbook_version }}, the collection's own pattern): the down scripts are in the release being
undone, not in the one rolled back to, and the role finds them there (rollback_migrations_version)."""

from __future__ import annotations

import os
import shutil

import pytest

from helpers import REPO, play_on_localhost, sql

FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'prisma')
KEPT = '20261103000000_add_order_status'
NOTES = '20261201000000_add_order_notes'

# The Prisma CLI (patched to run offline, tests/scripts/prisma_setup.py) marks the migration rolled back.
pytestmark = pytest.mark.usefixtures('prisma_offline_setup')


def _release(root, version, extra_migration=False):
    project = root / 'releases' / version
    shutil.copytree(os.path.join(FIXTURES, 'app'), str(project))
    os.symlink(os.path.join(REPO, 'node_modules'), str(project / 'node_modules'))
    if extra_migration:
        migration = project / 'prisma' / 'migrations' / NOTES
        migration.mkdir()
        (migration / 'migration.sql').write_text('ALTER TABLE "orders" ADD COLUMN "notes" TEXT;\n')
        (migration / 'down.sql').write_text('ALTER TABLE "orders" DROP COLUMN "notes";\n')
    return project


def _columns(stack, db):
    return [r[0] for r in sql(stack, db, "SELECT column_name FROM information_schema.columns "
                                         "WHERE table_name = 'orders' ORDER BY 1")]


def test_migration_tool_rollback_finds_the_down_scripts_in_the_release_being_undone(
        tmp_path, stack, make_db, run_module):
    db = make_db('rollback_role', rows=None)
    root = tmp_path / 'deploy'
    _release(root, 'v1')
    newer = _release(root, 'v2', extra_migration=True)
    url = 'postgresql://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                           stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)
    # v2 deployed: its migrations applied (natively, to save a CLI run), the new column there.
    deployed = run_module('runbook.deploy.prisma_migrate', state='deployed', engine='native', project_path=str(newer),
                          db_url=url)
    assert not deployed.get('failed'), deployed
    assert 'notes' in _columns(stack, db)

    # rollback.yml's situation: runbook_version names the release to go back to (v1), which has no down script
    # for what v2 added; the version being undone is v2.
    role_vars = dict(rollback_database='migration_tool', rollback_migrate_to=KEPT, rollback_migrations_version='v2',
                     rollback_backend=False, rollback_smoke=False, migrate_tool='prisma',
                     migrate_project_path=str(root) + '/releases/{{ runbook_version }}',
                     migrate_db_login_host=stack['RUNBOOK_PG_HOST'], migrate_db_login_port=int(stack['RUNBOOK_PG_PORT']),
                     migrate_db_login_user=stack['RUNBOOK_PG_USER'], migrate_db_login_password=stack['RUNBOOK_PG_PASSWORD'],
                     migrate_db_db=db)
    playbook = [{'name': 'roll back', 'hosts': 'localhost', 'gather_facts': False, 'vars': {'runbook_version': 'v1'},
                 'tasks': [{'name': 'roll back', 'ansible.builtin.include_role': {'name': 'runbook.deploy.rollback'},
                            'vars': role_vars},
                           {'name': 'show', 'ansible.builtin.debug': {'var': 'rollback_result'}}]}]
    rc, output = play_on_localhost(tmp_path, playbook)
    assert rc == 0, output[-6000:]
    assert 'notes' not in _columns(stack, db)
    assert sql(stack, db, 'SELECT rolled_back_at IS NOT NULL FROM _prisma_migrations WHERE migration_name = %s',
               (NOTES,)) == [(True,)]
    assert stack['RUNBOOK_PG_PASSWORD'] not in output
