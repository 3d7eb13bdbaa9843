"""runbook_aws: the AWS settings every role shares, as the roles' defaults read them (templated by Ansible)."""

from __future__ import annotations

from pathlib import Path

import yaml
from ansible.template import Templar, trust_as_template

ROLES = Path(__file__).resolve().parents[2] / 'roles'
SHARED = {
    'backup': {'backup_s3_endpoint_url': 'endpoint_url', 'backup_s3_region': 'region'},
    'deployment': {'deployment_history_s3_endpoint_url': 'endpoint_url', 'deployment_history_s3_region': 'region'},
    'frontend': {'frontend_aws_' + key: key for key in ('endpoint_url', 'region', 'profile', 'access_key',
                                                        'secret_key', 'session_token')},
    'preflight': {'preflight_aws_' + key: key for key in ('endpoint_url', 'region', 'profile')},
}


def _render(role, **inventory):
    defaults = yaml.safe_load((ROLES / role / 'defaults' / 'main.yml').read_text())
    variables = dict(defaults, **inventory)
    templar = Templar(loader=None, variables=variables)
    return {name: templar.template(trust_as_template(variables[name])) for name in SHARED[role]}


def test_every_role_defaults_to_runbook_aws_and_keeps_its_own_override():
    aws = {'endpoint_url': 'http://127.0.0.1:5000', 'region': 'eu-west-3', 'profile': 'deploy', 'access_key': 'AKIA1',
           'secret_key': 's3cr3t', 'session_token': 'tok'}
    for role, names in SHARED.items():
        assert _render(role, runbook_aws=aws) == {name: aws[key] for name, key in names.items()}, role
        assert set(_render(role).values()) == {''}, '%s: without runbook_aws, boto3 decides as before' % role
    own = _render('backup', runbook_aws=aws, backup_s3_region='us-east-2')
    assert own == {'backup_s3_endpoint_url': 'http://127.0.0.1:5000', 'backup_s3_region': 'us-east-2'}
