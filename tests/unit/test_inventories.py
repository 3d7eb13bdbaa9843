"""The example inventories (staging, production) and profiles parse, and name only variables something reads.

Every top-level variable of their YAML files must be one of: a role variable (roles/*/defaults/main.yml or
roles/*/meta/argument_specs.yml), a runbook_* variable the playbooks or roles use, an Ansible connection variable
(ansible_*), or a vault_* secret reference. A misspelt variable is silently ignored by Ansible; here it fails.
The inventories are also loaded and templated by Ansible itself (ansible-inventory, ansible-playbook with debug
tasks that contact no host), with the vault.yml.example placeholders as extra vars.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORIES = ('staging', 'production')
PROFILES = REPO / 'inventories' / 'profiles'
BIN = Path(sys.executable).parent
VAULT_REF = re.compile(r'\bvault_[a-z0-9_]+\b')


def role_variables():
    names = set()
    for defaults in REPO.glob('roles/*/defaults/main.yml'):
        names.update((yaml.safe_load(defaults.read_text()) or {}).keys())
    for specs in REPO.glob('roles/*/meta/argument_specs.yml'):
        for entry in (yaml.safe_load(specs.read_text())['argument_specs'] or {}).values():
            names.update((entry or {}).get('options') or {})
    return names


def role_defaults():
    """The knobs: variables a role gives a default (entry points' call-time inputs, such as deployment_phase, are not)."""
    names = set()
    for defaults in REPO.glob('roles/*/defaults/main.yml'):
        names.update((yaml.safe_load(defaults.read_text()) or {}).keys())
    return names


def runbook_variables():
    names = set()
    for path in list(REPO.glob('playbooks/**/*.yml')) + list(REPO.glob('roles/**/*.yml')):
        names.update(re.findall(r'\brunbook_[a-z0-9_]+\b', path.read_text()))
    return names


def inventory_files():
    files = []
    for env in INVENTORIES:
        files += sorted((REPO / 'inventories' / env).rglob('*.yml'))
        files += sorted((REPO / 'inventories' / env).rglob('*.yml.example'))
    files += sorted(PROFILES.glob('*.yml'))
    return files


def top_level_names(path):
    data = yaml.safe_load(path.read_text()) or {}
    if path.name == 'hosts.yml':
        names = set()

        def walk(group):
            names.update((group or {}).get('vars') or {})
            for host_vars in ((group or {}).get('hosts') or {}).values():
                names.update(host_vars or {})
            for child in ((group or {}).get('children') or {}).values():
                walk(child)
        walk(data['all'])
        return names
    return set(data)


def ansible_env(tmp_path):
    env = dict(os.environ)
    env.update(ANSIBLE_HOME=str(tmp_path / 'ansible-home'), ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / '.cache' / 'lint' / 'collections') + os.pathsep
               + env.get('ANSIBLE_COLLECTIONS_PATH', ''),
               ANSIBLE_NOCOLOR='1', ANSIBLE_DEPRECATION_WARNINGS='0')
    return env


def ansible_inventory(inventory, tmp_path):
    out = subprocess.run([str(BIN / 'ansible-inventory'), '-i', str(inventory), '--list'], capture_output=True,
                         text=True, env=ansible_env(tmp_path), check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize('path', inventory_files(), ids=lambda p: str(p.relative_to(REPO / 'inventories')))
def test_every_variable_is_read_by_something(path):
    known = role_variables() | runbook_variables()
    unknown = sorted(name for name in top_level_names(path)
                     if name not in known and not name.startswith(('ansible_', 'vault_')))
    assert not unknown, (
        f'{path.relative_to(REPO)} sets variables no role or playbook reads (misspelt, or removed from a role): '
        f'{", ".join(unknown)}')


@pytest.mark.parametrize('env', INVENTORIES)
def test_vault_references_are_defined_in_the_example(env):
    group_vars = REPO / 'inventories' / env / 'group_vars' / 'all'
    example = yaml.safe_load((group_vars / 'vault.yml.example').read_text())
    assert all(name.startswith('vault_') for name in example), 'vault.yml.example defines only vault_* names'
    used = set(VAULT_REF.findall((group_vars / 'main.yml').read_text()))
    assert used, 'main.yml takes its secrets from vault_* variables'
    assert not used - set(example), f'{env}: referenced but not in vault.yml.example: {sorted(used - set(example))}'
    assert not set(example) - used, f'{env}: in vault.yml.example but never used: {sorted(set(example) - used)}'


@pytest.mark.parametrize('env', INVENTORIES)
def test_every_role_variable_is_documented(env):
    """main.yml sets or (as a commented line) shows every role default: the page a user reads for every knob."""
    text = (REPO / 'inventories' / env / 'group_vars' / 'all' / 'main.yml').read_text()
    missing = sorted(name for name in role_defaults() if not re.search(rf'\b{name}\b', text))
    assert not missing, f'{env} main.yml does not mention: {", ".join(missing)}'


def test_production_is_protected_and_gated():
    data = yaml.safe_load((REPO / 'inventories/production/group_vars/all/main.yml').read_text())
    assert data['runbook_protected'] is True
    assert data['runbook_environment'] == 'production'
    assert data['deployment_staging_min_age_hours'] == 24
    assert data['deployment_history_s3_bucket']
    assert data['deployment_lock_path']
    assert data['runbook_serial']
    assert data['preflight_approval_required'] is True
    staging = yaml.safe_load((REPO / 'inventories/staging/group_vars/all/main.yml').read_text())
    assert staging['runbook_protected'] is False
    # Production's gate reads staging's history: both must write it to the same place.
    assert staging['deployment_history_s3_bucket'] == data['deployment_history_s3_bucket']
    assert data['deployment_staging_environment'] == staging['runbook_environment']


@pytest.mark.parametrize('env', INVENTORIES)
def test_ansible_loads_the_inventory_but_not_the_vault_example(env, tmp_path):
    listed = ansible_inventory(REPO / 'inventories' / env, tmp_path)
    hosts = listed['app_servers']['hosts']
    assert hosts
    hostvars = listed['_meta']['hostvars'][hosts[0]]
    assert hostvars['runbook_environment'] == env
    assert hostvars['runbook_protected'] is (env == 'production')
    assert not [name for name in hostvars if name.startswith('vault_')], 'vault.yml.example was loaded'

    # The same file named vault.yml is loaded: the .example name is what keeps it out.
    copy = tmp_path / env
    shutil.copytree(REPO / 'inventories' / env, copy)
    (copy / 'group_vars/all/vault.yml.example').rename(copy / 'group_vars/all/vault.yml')
    listed = ansible_inventory(copy, tmp_path)
    assert 'vault_db_password' in listed['_meta']['hostvars'][hosts[0]]


def render_all(inventory, names, extra_vars, tmp_path):
    """Template every named variable on every app server with ansible-playbook (debug only: no host is contacted)."""
    playbook = tmp_path / 'render.yml'
    playbook.write_text(yaml.safe_dump([{
        'name': 'Render', 'hosts': 'app_servers', 'gather_facts': False,
        'tasks': [
            {'name': 'Render every variable',
             'ansible.builtin.set_fact': {'__rendered': "{{ __names | map('extract', vars) | list }}"},
             'vars': {'__names': sorted(names)}},
            {'name': 'Show', 'ansible.builtin.debug': {'msg': '{{ __rendered | length }} rendered'}}]}]))
    extra = tmp_path / 'extra.yml'
    extra.write_text(yaml.safe_dump(extra_vars))
    out = subprocess.run([str(BIN / 'ansible-playbook'), '-i', str(inventory), str(playbook), '-e', f'@{extra}'],
                         capture_output=True, text=True, env=ansible_env(tmp_path), check=False, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.parametrize('env', INVENTORIES)
def test_every_value_templates(env, tmp_path):
    group_vars = REPO / 'inventories' / env / 'group_vars' / 'all'
    extra = yaml.safe_load((group_vars / 'vault.yml.example').read_text())
    extra.update(runbook_version='v4.0.0-phase4-bidirectional-sync', runbook_approved_by='Dana', runbook_ticket='CHG-1')
    render_all(REPO / 'inventories' / env, top_level_names(group_vars / 'main.yml'), extra, tmp_path)


@pytest.mark.parametrize('profile', sorted(PROFILES.glob('*.yml')), ids=lambda p: p.name)
def test_profile_templates_in_an_inventory(profile, tmp_path):
    """A profile copied into an inventory's group_vars/all/ (as README.md says) renders, given its vault_* values."""
    inventory = tmp_path / 'inventory'
    (inventory / 'group_vars' / 'all').mkdir(parents=True)
    shutil.copy(REPO / 'inventories/staging/hosts.yml', inventory / 'hosts.yml')
    shutil.copy(profile, inventory / 'group_vars' / 'all' / profile.name)
    (inventory / 'group_vars' / 'all' / 'environment.yml').write_text('runbook_environment: staging\n')
    text = profile.read_text()
    extra = {name: 'placeholder' for name in VAULT_REF.findall(text)}
    header = text.split('\n\n', 1)[0]
    assert not set(extra) - set(VAULT_REF.findall(header)), 'the header lists every vault_* the profile uses'
    extra.update(runbook_version='v1.2.0')
    render_all(inventory, top_level_names(profile), extra, tmp_path)


def _database_urls(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key.lower().endswith('database_url') and isinstance(value, str):
                # A bare reference to another variable is checked where that one is defined.
                if not re.fullmatch(r'\{\{\s*[a-z_][a-z0-9_]*\s*\}\}', value.strip()):
                    yield value
            else:
                yield from _database_urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from _database_urls(item)


def test_every_database_url_is_built_with_pg_url():
    """A DATABASE_URL put together by hand with `password | urlencode` breaks on a password holding '/' (the app
    then fails to start and the deployment sees only a smoke timeout): every example builds it with pg_url."""
    templated = {}
    for path in sorted((REPO / 'inventories').rglob('*.yml')):
        for value in _database_urls(yaml.safe_load(path.read_text())):
            if '{{' in value:
                templated.setdefault(str(path.relative_to(REPO)), []).append(value)
    assert len(templated) >= 6, templated
    for path, values in templated.items():
        for value in values:
            assert 'runbook.deploy.pg_url' in value and 'urlencode' not in value, (path, value)


def test_the_demo_ports_move_with_runbook_demo_port_base(tmp_path):
    """A second checkout on one machine runs make demo with another RUNBOOK_DEMO_PORT_BASE (issue 17)."""
    playbook = tmp_path / 'ports.yml'
    playbook.write_text('- hosts: app_servers\n  gather_facts: false\n  tasks:\n'
                        '    - ansible.builtin.debug:\n        msg: "PORT {{ inventory_hostname }} {{ sample_app_port + 0 }}"\n')
    ports = {}
    for base in ('', '40100'):
        for inventory in ('local', 'local-production'):
            done = subprocess.run([str(Path(sys.executable).parent / 'ansible-playbook'), '-i',
                                   str(REPO / 'inventories' / inventory), str(playbook)],
                                  env=dict(os.environ, RUNBOOK_DEMO_PORT_BASE=base), capture_output=True, text=True,
                                  check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            ports.update({(base or 'default', inventory, host): int(port)
                          for host, port in re.findall(r'PORT (\w+) (\d+)', done.stdout)})
    assert ports == {
        ('default', 'local', 'app1'): 39101, ('default', 'local-production', 'app1'): 39111,
        ('default', 'local-production', 'app2'): 39112, ('default', 'local-production', 'app3'): 39113,
        ('40100', 'local', 'app1'): 40101, ('40100', 'local-production', 'app1'): 40111,
        ('40100', 'local-production', 'app2'): 40112, ('40100', 'local-production', 'app3'): 40113}
