"""The AWX kit (awx/): every piece refers to something that exists and reads what the playbooks read.

AWX itself cannot run here; what can be checked without it is checked: the wrappers import the collection's
playbooks, each job template's survey asks for the variables its playbook requires and nothing the playbooks do not
read, the credential type injects exactly the vault_* variables the inventories read, ansible-builder accepts the
execution environment, and setup_awx.yml is a valid playbook (ansible-lint checks it with the rest).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AWX = REPO / 'awx'
BIN = Path(sys.executable).parent
WRAPPERS = ('deploy_staging', 'deploy_production', 'rollback', 'adopt')
# What each playbook requires, and where: a job template's survey must ask for these.
REQUIRED = {
    'deploy_staging': {'runbook_version'},  # roles/deployment/tasks/gate.yml
    # deploy_production.yml sets deployment_require_approval: the gate wants the sign-offs (or one approver) and the
    # ticket; the survey asks for the sign-offs, as text (one "Role: Name" per line), which cover both.
    'deploy_production': {'runbook_version', 'runbook_approvals', 'runbook_ticket'},
    'rollback': {'rollback_database'},  # playbooks/rollback.yml asserts the database choice is explicit
    'adopt': {'runbook_version', 'backend_adopt_from'},  # roles/backend/tasks/adopt_check.yml
}


def setup_playbook():
    with open(AWX / 'setup_awx.yml') as handle:
        return yaml.safe_load(handle)[0]


def job_templates():
    task = next(t for t in setup_playbook()['tasks'] if 'awx.awx.job_template' in t)
    return task['loop']


def read_by_the_collection():
    """Every variable name the collection's playbooks, roles and argument specs mention."""
    text = ''
    for path in list(REPO.glob('playbooks/*.yml')) + list(REPO.glob('roles/**/*.yml')):
        text += path.read_text()
    return set(re.findall(r'\b[a-z][a-z0-9_]+\b', text))


@pytest.mark.parametrize('name', WRAPPERS)
def test_each_wrapper_imports_the_collections_playbook_of_its_name(name):
    with open(AWX / ('%s.yml' % name)) as handle:
        plays = yaml.safe_load(handle)
    assert plays == [{'name': 'The runbook.deploy %s playbook' % name,
                      'ansible.builtin.import_playbook': 'runbook.deploy.%s' % name}]
    assert (REPO / 'playbooks' / ('%s.yml' % name)).is_file()


def test_every_job_template_runs_a_wrapper_with_a_survey_asking_for_what_it_requires():
    read = read_by_the_collection()
    templates = job_templates()
    assert {t['playbook'] for t in templates} == {'%s.yml' % w for w in WRAPPERS}
    for template in templates:
        with open(AWX / 'surveys' / ('%s.json' % template['survey'])) as handle:
            survey = json.load(handle)
        questions = {q['variable']: q for q in survey['spec']}
        playbook = template['playbook'][:-len('.yml')]
        missing = REQUIRED[playbook] - {v for v, q in questions.items() if q['required']}
        assert not missing, '%s: no required question for %s' % (template['name'], missing)
        unread = [v for v in questions if v not in read]
        assert not unread, '%s asks for variables nothing reads: %s' % (template['name'], unread)
        for question in questions.values():
            assert question['type'] in ('text', 'textarea', 'multiplechoice') and question['question_name']
            if question['type'] == 'multiplechoice':
                assert question['choices'] and question['default'] in [''] + question['choices']


def test_the_rollback_survey_offers_exactly_the_database_choices_the_playbook_accepts():
    with open(AWX / 'surveys' / 'rollback.json') as handle:
        question = next(q for q in json.load(handle)['spec'] if q['variable'] == 'rollback_database')
    accepted = re.search(r"rollback_database \| default\(''\) in (\[[^\]]*\])", (REPO / 'playbooks' / 'rollback.yml').read_text())
    assert question['choices'] == yaml.safe_load(accepted.group(1)) and question['default'] == ''


def test_the_credential_type_injects_exactly_the_vault_variables_the_inventories_read():
    with open(AWX / 'credential_type.yml') as handle:
        credential = yaml.safe_load(handle)
    injected = credential['injectors']['extra_vars']
    wanted = set()
    for inventory in ('staging', 'production'):
        for path in (REPO / 'inventories' / inventory).rglob('*.yml'):
            wanted |= set(re.findall(r'\bvault_[a-z0-9_]+\b', path.read_text()))
    assert set(injected) == wanted
    fields = {f['id'] for f in credential['inputs']['fields']}
    assert all(f['secret'] for f in credential['inputs']['fields'])
    assert set(credential['inputs']['required']) <= fields
    for template in injected.values():
        assert re.fullmatch(r'\{\{ (\w+) \}\}', template).group(1) in fields
    # The same names as the vault file a command-line user encrypts.
    with open(REPO / 'inventories' / 'production' / 'group_vars' / 'all' / 'vault.yml.example') as handle:
        assert set(yaml.safe_load(handle)) == set(injected)


def test_the_workflow_runs_staging_then_an_approval_then_production_and_offers_a_rollback():
    task = next(t for t in setup_playbook()['tasks'] if 'awx.awx.workflow_job_template' in t)
    nodes = {n['identifier']: n for n in task['awx.awx.workflow_job_template']['workflow_nodes']}
    names = {t['name'] for t in job_templates()}

    def next_of(identifier, outcome):
        return [n['identifier'] for n in nodes[identifier].get('related', {}).get(outcome, [])]

    assert nodes['staging']['unified_job_template']['name'] in names
    assert next_of('staging', 'success_nodes') == ['approve-production']
    assert nodes['approve-production']['unified_job_template']['type'] == 'workflow_approval'
    assert next_of('approve-production', 'success_nodes') == ['production']
    assert nodes['production']['unified_job_template']['name'] == 'runbook.deploy production deploy'
    assert next_of('production', 'failure_nodes') == ['approve-rollback']
    assert nodes['approve-rollback']['unified_job_template']['type'] == 'workflow_approval'
    assert nodes['rollback']['unified_job_template']['name'] == 'runbook.deploy production rollback'
    assert nodes['rollback']['extra_data'] == {'rollback_database': 'keep'}


def test_setup_awx_is_a_valid_playbook():
    done = subprocess.run([str(BIN / 'ansible-playbook'), '--syntax-check', 'setup_awx.yml'], cwd=AWX,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ansible_builder_accepts_the_execution_environment(tmp_path):
    done = subprocess.run([str(BIN / 'ansible-builder'), 'create', '-f', str(AWX / 'execution-environment.yml'),
                           '--context', str(tmp_path / 'context')], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    build = tmp_path / 'context' / '_build'
    assert (build / 'requirements.yml').read_text() == (AWX / 'collections' / 'requirements.yml').read_text()
    containerfile = next((tmp_path / 'context').glob('[CD]*file')).read_text()
    assert 'ansible-core>=2.19,<2.20' in containerfile and 'ansible-galaxy' in containerfile


def test_the_project_configuration_enables_the_report():
    config = (AWX / 'ansible.cfg').read_text()
    assert re.search(r'^callbacks_enabled = runbook\.deploy\.deploy_report$', config, re.M)
    assert os.path.exists(REPO / 'plugins' / 'callback' / 'deploy_report.py')
