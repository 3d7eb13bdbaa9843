"""child_environment and CommandRunner: what a child process gets from the module's environment.

The runner test starts real processes through a real AnsibleModule (nothing replaced): a child reads its own
/proc/self/environ, which is what the PM2 daemon or a migration tool would keep.
"""

from __future__ import annotations

import os

import pytest

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.runbook.deploy.plugins.module_utils import command

CANARIES = {
    'AWS_SECRET_ACCESS_KEY': 'canary-aws-secret',
    'AWS_ACCESS_KEY_ID': 'canary-aws-id',
    'AWS_SESSION_TOKEN': 'canary-aws-session',
    'FOO_PASSWORD': 'canary-foo-password',
    'PGPASSWORD': 'canary-pgpassword',
    'DATABASE_URL': 'postgresql://app:canary-db@db/app',
    'GITHUB_TOKEN': 'canary-token',
    'APP_SECRET_KEY': 'canary-secret-key',
    'SOME_UNRELATED_SETTING': 'canary-unrelated',
    'TERM': 'xterm-canary',
    'HTTPS_PROXY': 'http://user:canary-proxy@proxy:3128',
    'PM2_PUBLIC_KEY': 'canary-pm2-key',
    'NODE_AUTH_TOKEN': 'canary-npm-token',
}
NEEDED = {
    'PATH': '/usr/local/bin:/usr/bin:/bin',
    'HOME': '/home/deploy',
    'LANG': 'C.UTF-8',
    'LC_ALL': 'C.UTF-8',
    'TZ': 'UTC',
    'USER': 'deploy',
    'TMPDIR': '/var/tmp',
    'NODE_PATH': '/srv/app/node_modules',
    'JAVA_HOME': '/usr/lib/jvm/default',
    'XDG_CACHE_HOME': '/home/deploy/.cache',
}


def test_only_the_allow_list_and_the_extras_are_kept():
    env = command.child_environment({'PM2_HOME': '/srv/pm2', 'PGPASSWORD': 'explicit'},
                                    environ=dict(CANARIES, **NEEDED))
    assert env == dict(NEEDED, PM2_HOME='/srv/pm2', PGPASSWORD='explicit')


def test_inherit_adds_names_and_prefixes_but_never_secret_ones():
    source = dict(CANARIES, PGSSLMODE='verify-full', PGSSLROOTCERT='/ca.pem', PGSERVICEFILE='/s', PGPASSFILE='/p',
                  FLYWAY_LOCATIONS='db', FLYWAY_PASSWORD='canary-flyway')
    env = command.child_environment(inherit=('PGSSL*', 'FLYWAY_*', 'FOO_PASSWORD'), environ=source)
    assert env == {'PGSSLMODE': 'verify-full', 'PGSSLROOTCERT': '/ca.pem', 'FLYWAY_LOCATIONS': 'db'}


@pytest.mark.parametrize('name', sorted(CANARIES))
def test_secret_looking_names(name):
    expected = name not in ('SOME_UNRELATED_SETTING', 'TERM', 'HTTPS_PROXY')
    assert command.is_secret_name(name) is expected


@pytest.mark.parametrize('name', sorted(NEEDED) + ['PGSSLKEY', 'NODE_OPTIONS', 'SSL_CERT_FILE', 'LC_MESSAGES'])
def test_names_that_only_look_technical_are_not_secret(name):
    assert command.is_secret_name(name) is False


def child_environ(runner, **kwargs):
    rc, out, err = runner.run(['cat', '/proc/self/environ'], **kwargs)
    assert rc == 0, err
    return dict(item.split('=', 1) for item in out.split('\0') if item)


def test_runner_children_never_see_the_module_environment(monkeypatch):
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    with patch_module_args({}):
        module = AnsibleModule(argument_spec={})
    runner = command.CommandRunner(module)
    env = child_environ(runner, env={'FLYWAY_PASSWORD': 'meant-for-the-tool'})
    leaked = sorted(n for n in env if n in CANARIES or any(v in env[n] for v in CANARIES.values()))
    assert leaked == [], 'the child inherited %s' % leaked
    assert env['FLYWAY_PASSWORD'] == 'meant-for-the-tool'
    assert env['PATH'] == os.environ['PATH'] and env['HOME'] == os.environ['HOME']
    # The module's own environment is untouched afterwards (boto3 in the module still needs its keys).
    assert os.environ['AWS_SECRET_ACCESS_KEY'] == 'canary-aws-secret'
    assert isinstance(os.environ, type(os.environ)) and os.environ is not env
    assert 'FLYWAY_PASSWORD' not in os.environ


def test_runner_inherit(monkeypatch):
    monkeypatch.setenv('PGSSLMODE', 'require')
    with patch_module_args({}):
        module = AnsibleModule(argument_spec={})
    assert 'PGSSLMODE' not in child_environ(command.CommandRunner(module))
    assert child_environ(command.CommandRunner(module, inherit=('PGSSLMODE',)))['PGSSLMODE'] == 'require'
