"""runbook.deploy.pg_url in a real run: a role whose password holds every URL delimiter connects with the URL the
filter builds, through libpq (psycopg2) and through node-postgres (the driver of Express apps and of the sample app),
while the `urlencode` recipe the profiles used to document does not."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import psycopg2
import pytest
import yaml

from helpers import REPO, sql

PASSWORD = 'p/ss@w:rd#?%&=+ é'
NODE_CONNECT = """
const {Client} = require('pg');
const client = new Client({connectionString: process.env.DATABASE_URL});
client.connect()
  .then(() => client.query('SELECT current_user AS "user", current_database() AS db'))
  .then((result) => { console.log(JSON.stringify(result.rows[0])); return client.end(); })
  .catch((error) => { console.error(error.message); process.exit(1); });
"""


@pytest.fixture
def owner(stack, make_db):
    """A database and its owner (no superuser) whose password holds every URL delimiter."""
    db = make_db(rows=None)
    role = 'url_owner_' + uuid.uuid4().hex[:8]
    sql(stack, 'postgres', "CREATE ROLE %s LOGIN PASSWORD %%s" % role, (PASSWORD,))
    sql(stack, 'postgres', 'ALTER DATABASE %s OWNER TO %s' % (db, role))
    yield role, db
    sql(stack, 'postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % db)
    sql(stack, 'postgres', 'DROP ROLE IF EXISTS %s' % role)


def _template(tmp_path, monkeypatch, expressions):
    """Render {name: expression} in a real ansible-playbook run (the filter resolved by its FQCN from the collection),
    each result written to a 0600 file. The password reaches the play through the environment, as a vault variable
    would reach an inventory."""
    monkeypatch.setenv('PG_URL_TEST_PASSWORD', PASSWORD)
    tasks = [{'name': 'render ' + name, 'ansible.builtin.copy': {
        'dest': str(tmp_path / name), 'mode': '0600', 'content': '{{ %s }}' % expression}}
        for name, expression in expressions.items()]
    playbook = tmp_path / 'render.yml'
    playbook.write_text(yaml.safe_dump([{'name': 'render', 'hosts': 'localhost', 'gather_facts': False,
                                         'tasks': tasks}]))
    proc = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                           str(playbook)], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {name: (tmp_path / name).read_text() for name in expressions}


def _node_connects(url):
    return subprocess.run(['node', '-e', NODE_CONNECT], capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, DATABASE_URL=url, NODE_PATH=os.path.join(REPO, 'node_modules')))


def test_the_url_connects_through_libpq_and_node_postgres(stack, owner, tmp_path, monkeypatch):
    role, db = owner
    parts = ("{'login_host': '%s', 'login_port': %s, 'login_user': '%s', 'login_db': '%s', "
             "'login_password': lookup('ansible.builtin.env', 'PG_URL_TEST_PASSWORD')}"
             % (stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], role, db))
    rendered = _template(tmp_path, monkeypatch, {
        'url': '%s | runbook.deploy.pg_url(options={"application_name": "pg url"})' % parts,
        # The recipe pg_url replaces.
        'recipe': "'postgresql://%s:' ~ (lookup('ansible.builtin.env', 'PG_URL_TEST_PASSWORD') | urlencode) ~ "
                  "'@%s:%s/%s'" % (role, stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)})
    url = rendered['url']
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT current_user, current_database(), current_setting(%s)', ('application_name',))
            assert cursor.fetchone() == (role, db, 'pg url')
    finally:
        conn.close()
    node = _node_connects(url)
    assert node.returncode == 0, node.stderr
    assert json.loads(node.stdout) == {'user': role, 'db': db}

    # With the urlencode recipe the app cannot connect.
    assert rendered['recipe'] != url
    assert _node_connects(rendered['recipe']).returncode != 0
