"""runbook.deploy.prisma_migrate: which statements of a failed migration were committed (issue 15, item 11).

Prisma's JavaScript engine (the test project's driver adapter) runs a migration's statements one by one, each
committed on its own, and its error does not say which failed; the module tells from its statement recorder.
The native engine sends the script as one query: PostgreSQL rolls all of it back.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from helpers import REPO, assert_clear_failure, sql

MODULE = 'runbook.deploy.prisma_migrate'
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'prisma')
ITEMS = '20261105000000_create_items'
PURGE = '20261106000000_purge_items'
DELETE = 'DELETE FROM "items" WHERE "id" <= 50'
UPDATE = 'UPDATE "items" SET "name" = upper("name")'
INSERT = 'INSERT INTO "items" ("id", "name") VALUES (51, \'duplicate\')'
INDEX = 'CREATE INDEX "items_name_idx" ON "items" ("name")'


# The Prisma CLI patched to run offline (tests/scripts/prisma_setup.py), once per session: conftest.py.
pytestmark = pytest.mark.usefixtures('prisma_offline_setup')


@pytest.fixture
def purge_project(tmp_path):
    """The test project plus the purge migrations; node_modules linked to the repository's."""
    path = tmp_path / 'app'
    shutil.copytree(os.path.join(FIXTURES, 'app'), str(path))
    os.symlink(os.path.join(REPO, 'node_modules'), str(path / 'node_modules'))
    for name in (ITEMS, PURGE):
        shutil.copytree(os.path.join(FIXTURES, 'purge_migrations', name), str(path / 'prisma' / 'migrations' / name))
    return path


def run_deploy(run_module, stack, db, project, **args):
    url = 'postgresql://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                           stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)
    return run_module(MODULE, state='deployed', project_path=str(project), db_url=url, **args)


def test_cli_failure_names_the_committed_statements(run_module, make_db, stack, purge_project):
    db = make_db('prisma_fail', rows=None)
    failed = run_deploy(run_module, stack, db, purge_project)
    assert_clear_failure(failed, 'P3018', PURGE, 'one by one', 'committed: [1] %s, [2] %s' % (DELETE, UPDATE),
                         'failed: [3] %s' % INSERT, 'not run: [4] %s' % INDEX)
    assert failed['error']['statements'] == {'execution': 'one_by_one', 'exact': True, 'committed': [
        '-- Purge the old items, rename the rest, then a statement that fails: item 51 already exists.\n' + DELETE,
        UPDATE], 'failed': INSERT, 'not_run': [INDEX]}
    # What the message says is what the database holds: the DELETE and the UPDATE stayed, the index never came.
    assert sql(stack, db, 'SELECT count(*), min(id), bool_and(name = upper(name)) FROM items')[0] == (50, 51, True)
    assert sql(stack, db, "SELECT to_regclass('items_name_idx')")[0][0] is None
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(failed)
    # The recorder lived in a private directory that is gone, and the URL stayed out of every command line.
    assert all('statement-recorder' not in c and 'postgresql://' not in c for c in failed['executed_commands'])


def test_native_failure_says_nothing_of_the_script_was_committed(run_module, make_db, stack, purge_project):
    db = make_db('prisma_fail', rows=None)
    failed = run_deploy(run_module, stack, db, purge_project, engine='native')
    assert_clear_failure(failed, 'P3018', PURGE, 'None of its 4 statement(s) were committed', 'one transaction')
    assert failed['error']['statements'] == {'execution': 'one_transaction', 'exact': True, 'committed': [],
                                             'failed': None, 'not_run': []}
    assert sql(stack, db, 'SELECT count(*) FROM items')[0][0] == 100
