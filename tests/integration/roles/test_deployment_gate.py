"""The deployment role's gate (tasks_from gate) with several sign-offs (runbook 001: three roles, 003: two): every
required role signed, by different people, given as extra vars or as an AWX survey's text; refused otherwise with
every problem named, before anything changes. One ansible-playbook run, one block per case."""

from __future__ import annotations

import json
import os
import subprocess

import yaml

from helpers import REPO

CASES = {
    'one_missing': {'runbook_approvals': 'Product Owner: Dana'},
    'one_person_twice': {'runbook_approvals': [{'role': 'Product Owner', 'name': 'Dana'},
                                               {'role': 'tech lead', 'name': 'dana'}]},
    'one_person_twice_allowed': {'runbook_approvals': 'Product Owner: Dana; Tech Lead: Dana',
                                 'deployment_approvals_distinct': False},
    'signed': {'runbook_approvals': 'Product Owner: Dana\nTech Lead: Lee Chen\nQA: Ana'},
    'malformed': {'runbook_approvals': 'Product Owner Dana'},
    'one_approver_is_not_enough': {'runbook_approved_by': 'Dana'},
}


def test_every_required_role_signs_off_each_a_different_person(tmp_path):
    tasks = []
    for name, extra in CASES.items():
        tasks.append({'name': 'Case %s' % name, 'vars': extra, 'block': [
            {'name': 'Check the gates', 'ansible.builtin.include_role': {
                'name': 'runbook.deploy.deployment', 'tasks_from': 'gate', 'public': True}},
            {'name': 'Keep who approved', 'ansible.builtin.copy': {
                'dest': str(tmp_path / ('%s.json' % name)), 'mode': '0600',
                'content': '{{ {"passed": true, "approved_by": deployment_approved_by,'
                           ' "approvals": deployment_approvals} | to_json }}'}},
        ], 'rescue': [{'name': 'Keep the refusal', 'ansible.builtin.copy': {
            'dest': str(tmp_path / ('%s.json' % name)), 'mode': '0600',
            'content': '{{ {"passed": false, "msg": ansible_failed_result.msg} | to_json }}'}}]})
    playbook = tmp_path / 'gate.yml'
    playbook.write_text(yaml.safe_dump([{'name': 'Gate', 'hosts': 'localhost', 'gather_facts': False, 'vars': {
        'runbook_environment': 'production-like', 'runbook_version': 'v2.0.0', 'runbook_ticket': 'CHG-7',
        'deployment_require_approval': True, 'runbook_required_approvals': ['Product Owner', 'Tech Lead'],
        'runbook_backup': False}, 'tasks': tasks}], sort_keys=False))
    run = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                          str(playbook)], capture_output=True, text=True, check=False, timeout=300,
                         env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO, '.venv', 'bin', 'python')))
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    found = {}
    for name in CASES:
        with open(tmp_path / ('%s.json' % name)) as handle:
            found[name] = json.load(handle)

    refused = 'A production-like deployment needs a sign-off by each of Product Owner, Tech Lead: '
    assert found['one_missing']['passed'] is False
    assert refused + 'no sign-off by the Tech Lead. Pass runbook_approvals' in found['one_missing']['msg']
    assert found['one_person_twice']['passed'] is False
    assert (refused + 'Dana signed off as Product Owner and Tech Lead: each of these roles needs its own approver'
            in found['one_person_twice']['msg']), found['one_person_twice']
    assert found['one_person_twice_allowed']['passed'] is True
    assert found['signed'] == {'passed': True, 'approved_by': 'Dana (Product Owner), Lee Chen (Tech Lead), Ana (QA)',
                               'approvals': [{'role': 'Product Owner', 'name': 'Dana'},
                                             {'role': 'Tech Lead', 'name': 'Lee Chen'}, {'role': 'QA', 'name': 'Ana'}]}
    assert found['malformed']['passed'] is False
    assert "'Product Owner Dana' is not 'Role: Name'" in found['malformed']['msg'], found['malformed']
    assert found['one_approver_is_not_enough']['passed'] is False
    assert 'no sign-off by the Product Owner; no sign-off by the Tech Lead' in found['one_approver_is_not_enough']['msg']
