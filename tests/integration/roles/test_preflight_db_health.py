"""The preflight role's database health (runbook 002 "Database Health"), against the stack's PostgreSQL: a
transaction left open, which would hold a migration (and every query of the apps behind it), is a problem found
before anything changes; a user that sees only its own sessions gets a warning that the view is partial.

The healthy case runs in the molecule preflight scenario (its report has database_health, ok, with the numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import yaml

from helpers import REPO, connect, sql


def _playbook(out_dir, role_vars):
    """Run the role once per vars, each in a block whose rescue keeps the failure; write each report to a file."""
    tasks = []
    for index, extra in enumerate(role_vars):
        tasks.append({'name': 'Run the checks (%d)' % index, 'block': [
            {'name': 'Run the role', 'ansible.builtin.include_role': {'name': 'runbook.deploy.preflight'}, 'vars': extra},
            {'name': 'Note the success', 'ansible.builtin.set_fact': {'failure': ''}},
        ], 'rescue': [{'name': 'Keep the failure', 'ansible.builtin.set_fact': {'failure': '{{ ansible_failed_result.msg }}'}}]})
        tasks.append({'name': 'Write what it found (%d)' % index, 'ansible.builtin.copy': {
            'dest': os.path.join(out_dir, 'out%d.json' % index), 'mode': '0600',
            'content': '{{ {"report": preflight_report, "failure": failure} | to_json }}'}})
    return [{'name': 'Pre-flight', 'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]


def test_an_idle_transaction_is_a_problem_and_a_partial_view_a_warning(stack, make_db, tmp_path):
    db = make_db('preflight', rows=1)
    role = 'deployer_%s' % uuid.uuid4().hex[:8]
    password = 'pw/%s' % uuid.uuid4().hex[:10]
    sql(stack, 'postgres', "CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, password))
    connection = dict(preflight_db_login_host=stack['RUNBOOK_PG_HOST'], preflight_db_login_port=int(stack['RUNBOOK_PG_PORT']),
                      preflight_db_login_db=db)
    superuser = dict(connection, preflight_db_login_user=stack['RUNBOOK_PG_USER'],
                     preflight_db_login_password=stack['RUNBOOK_PG_PASSWORD'],
                     preflight_db_health_thresholds=[
                         {'name': 'idle_transaction', 'metric': 'longest_idle_in_transaction_s', 'op': '<', 'value': 1},
                         {'name': 'connections', 'metric': 'connections_used', 'op': '<', 'value': 0.8}])
    owner = dict(connection, preflight_db_login_user=role, preflight_db_login_password=password)
    playbook = tmp_path / 'preflight.yml'
    playbook.write_text(yaml.safe_dump(_playbook(str(tmp_path), [superuser, owner]), sort_keys=False))
    holder = connect(stack, db)
    holder.autocommit = False
    try:
        with holder.cursor() as cursor:
            cursor.execute('SELECT count(*) FROM public.users')  # then idle in transaction, holding its lock
        run = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                              str(playbook)], capture_output=True, text=True, check=False, timeout=300,
                             env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO, '.venv', 'bin', 'python')))
    finally:
        holder.rollback()
        holder.close()
        sql(stack, 'postgres', 'DROP ROLE IF EXISTS %s' % role)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert password not in run.stdout + run.stderr and stack['RUNBOOK_PG_PASSWORD'] not in run.stdout + run.stderr

    with open(tmp_path / 'out0.json') as handle:
        found = json.load(handle)
    health = found['report']['database_health']
    assert health['ok'] is False, found
    assert health['detail'].startswith('idle_transaction: longest_idle_in_transaction_s = '), health
    assert health['detail'].endswith(', healthy is < 1'), health
    assert 'Pre-flight checks found 1 problem(s) on localhost:' in found['failure'], found
    assert '- database health: idle_transaction: longest_idle_in_transaction_s = ' in found['failure'], found
    assert found['report']['warnings'] == [], found

    with open(tmp_path / 'out1.json') as handle:
        found = json.load(handle)
    assert found['failure'] == '', found
    health = found['report']['database_health']
    assert health['ok'] is True and health['detail'].startswith('connections_used 0.'), found
    # The owner's own view: the superuser's open transaction is not counted, and it is told so.
    assert 'longest_idle_in_transaction_s 0.0' in health['detail'], health
    [warning] = found['report']['warnings']
    assert warning.startswith('database health: user %s sees only its own sessions' % role), warning
    assert 'GRANT pg_monitor TO "%s"' % role in warning
