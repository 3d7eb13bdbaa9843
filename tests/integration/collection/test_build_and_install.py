"""The collection builds into a tarball that installs offline and lists its modules (issue: foundation)."""

from __future__ import annotations

import os
import subprocess
import tarfile

from helpers import REPO


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


def test_build_install_and_list_modules(tmp_path):
    venv_bin = os.path.join(REPO, '.venv', 'bin')
    built = run([os.path.join(venv_bin, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(tmp_path), REPO])
    assert built.returncode == 0, built.stderr
    tarball = tmp_path / 'runbook-deploy-0.1.0.tar.gz'
    assert tarball.exists()
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert 'plugins/modules/pg_backup.py' in names
    assert 'roles/backup/tasks/main.yml' in names
    assert 'meta/runtime.yml' in names and 'meta/execution-environment.yml' in names
    assert 'playbooks/deploy_production.yml' in names and 'playbooks/deploy.yml' in names
    assert 'inventories/staging/hosts.yml' in names and 'inventories/profiles' in names
    # No development or sample files: the tests, the sample app and its local inventories and playbooks, the tools'
    # configuration and the test venv's requirements.
    for excluded in ('tests', 'molecule', 'bench', '.venv', 'node_modules', '.stack', '.cache', 'collections',
                     'sample_app', 'inventories/local', 'inventories/local-production', 'playbooks/local_sample_app.yml',
                     'playbooks/demo.sh', 'pytest.ini', '.config', 'requirements/dev.txt', 'Makefile', '.ci'):
        assert not [n for n in names if n == excluded or n.startswith(excluded + '/')], excluded

    target = tmp_path / 'installed'
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(target), ANSIBLE_HOME=str(tmp_path / 'home'))
    installed = run([os.path.join(venv_bin, 'ansible-galaxy'), 'collection', 'install', '--no-deps', '-p', str(target),
                     str(tarball)], env=env)
    assert installed.returncode == 0, installed.stderr
    assert (target / 'ansible_collections' / 'runbook' / 'deploy' / 'plugins' / 'modules' / 'pg_backup.py').exists()

    listed = run([os.path.join(venv_bin, 'ansible-doc'), '-l', 'runbook.deploy'], env=env)
    assert listed.returncode == 0, listed.stderr
    modules = sorted(line.split()[0] for line in listed.stdout.splitlines() if line.strip())
    expected = sorted('runbook.deploy.' + f[:-3] for f in os.listdir(os.path.join(REPO, 'plugins', 'modules'))
                      if f.endswith('.py') and not f.startswith('_'))
    assert modules == expected
    doc = run([os.path.join(venv_bin, 'ansible-doc'), 'runbook.deploy.pg_backup'], env=env)
    assert doc.returncode == 0 and 'max_age' in doc.stdout, doc.stderr
