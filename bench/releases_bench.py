#!/usr/bin/env python
"""Benchmark: releases with runbook.deploy.backend vs the runbooks' PM2 commands, under steady HTTP load.

Prints, from one run, side by side:
  (a) failed requests during a deploy of a new release: the backend role (build beside, switch, pm2 reload)
  (b) the same for the runbook's sequence (pm2 stop, build in place, pm2 start --only --env, without the sleep)
  (c) rollback: command start until the previous version answers; the role's rollback (switch back, reload)
      vs the runbook's "git checkout v1 && npm ci && npm run build && pm2 restart" (copy, build, restart)

The load is 4 threads sending GET /health to 127.0.0.1 in a loop for the duration of each step (bounded), with a
10 s client timeout; the slowest answered request is printed too.
Run: `source tests/scripts/env.sh; .venv/bin/python bench/releases_bench.py`.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PM2 = os.path.join(REPO, 'node_modules', '.bin', 'pm2')
PLAYBOOK = os.path.join(REPO, '.venv', 'bin', 'ansible-playbook')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Load(object):
    """Steady GET /health from 4 threads; counts answers and failures, and remembers versions seen."""

    def __init__(self, port, threads=4, limit=600):
        self.url = 'http://127.0.0.1:%d/health' % port
        self.ok = 0
        self.failed = 0
        self.versions = set()
        self.errors = collections.Counter()
        self.slowest = 0.0
        self.stop = threading.Event()
        self.limit = limit
        self.threads = [threading.Thread(target=self.loop, daemon=True) for dummy in range(threads)]
        self.lock = threading.Lock()

    def loop(self):
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                # A 10 s client timeout, like a patient client; a slower answer counts as failed.
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    version = json.loads(response.read())['version']
                with self.lock:
                    self.ok += 1
                    self.versions.add(version)
                    self.slowest = max(self.slowest, time.monotonic() - started)
            except Exception as exc:  # pylint: disable=broad-except
                with self.lock:
                    self.failed += 1
                    self.errors[type(getattr(exc, 'reason', exc)).__name__] += 1
                time.sleep(0.01)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()


def version_now(port):
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d/health' % port, timeout=1) as response:
            return json.loads(response.read())['version']
    except Exception:  # pylint: disable=broad-except
        return None


def wait_version(port, version, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if version_now(port) == version:
            return True
        time.sleep(0.05)
    return False


class Site(object):
    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.home = tempfile.mkdtemp(prefix='pm2-bench-', dir='/tmp')
        open(os.path.join(self.home, 'touch'), 'w').close()
        self.env = dict(os.environ, PM2_HOME=self.home)
        for version in ('v1', 'v2'):
            target = os.path.join(root, 'sources', version)
            shutil.copytree(os.path.join(REPO, 'sample_app', 'backend'), target)
            with open(os.path.join(target, 'VERSION'), 'w') as handle:
                handle.write(version + '\n')

    def dotenv(self, app_dir):
        return 'PORT=%d\nAPI_NAME=api\nWORKER_NAME=worker\nAPP_DIR=%s\n' % (self.port, app_dir)

    def kill(self):
        subprocess.run([PM2, 'kill'], env=self.env, capture_output=True, check=False)

    def role(self, version=None, tasks_from='main'):
        deploy_to = os.path.join(self.root, 'srv')
        role_vars = dict(backend_app_name='bench', backend_deploy_to=deploy_to, backend_pm2_apps=['api', 'worker'],
                         backend_pm2_home=self.home, backend_pm2_executable=PM2, backend_pm2_stable_for=1,
                         backend_pm2_env='production', backend_ready_url='http://127.0.0.1:%d/health' % self.port)
        if version:
            role_vars.update(backend_version=version, backend_source_dir=os.path.join(self.root, 'sources', version))
        play = [{'name': 'bench', 'hosts': 'localhost', 'gather_facts': False, 'tasks': [
            {'name': 'backend', 'ansible.builtin.include_role': {'name': 'runbook.deploy.backend',
                                                                 'tasks_from': tasks_from}, 'vars': role_vars}]}]
        path = os.path.join(self.root, 'play.yml')
        with open(path, 'w') as handle:
            yaml.safe_dump(play, handle)
        proc = subprocess.run([PLAYBOOK, '-i', 'localhost,', '-c', 'local', path], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise SystemExit('backend role failed:\n' + proc.stdout[-3000:])

    def pm2(self, *args, cwd=None):
        subprocess.run([PM2] + list(args), env=self.env, cwd=cwd, capture_output=True, check=True)

    def runbook_checkout(self, version, app_dir):
        """The runbook's in-place checkout + build: copy the version's sources over the app directory."""
        shutil.copytree(os.path.join(self.root, 'sources', version), app_dir, dirs_exist_ok=True)
        with open(os.path.join(app_dir, '.env'), 'w') as handle:
            handle.write(self.dotenv(app_dir))
        subprocess.run(['npm', 'ci', '--no-audit', '--no-fund'], cwd=app_dir, capture_output=True, check=True)
        subprocess.run(['npm', 'run', 'build'], cwd=app_dir, capture_output=True, check=True)


def bench_role(work):
    site = Site(os.path.join(work, 'role'))
    try:
        shared = os.path.join(site.root, 'srv', 'shared')
        os.makedirs(shared)
        with open(os.path.join(shared, '.env'), 'w') as handle:
            handle.write(site.dotenv(os.path.join(site.root, 'srv', 'current')))
        site.role('v1')
        with Load(site.port) as load:
            started = time.monotonic()
            site.role('v2')
            deploy = time.monotonic() - started
        assert version_now(site.port) == 'v2'
        started = time.monotonic()
        thread = threading.Thread(target=site.role, kwargs=dict(tasks_from='rollback'))
        thread.start()
        answered = wait_version(site.port, 'v1')
        rollback_answer = time.monotonic() - started
        thread.join()
        rollback_done = time.monotonic() - started
        return dict(failed=load.failed, ok=load.ok, deploy=deploy, rollback_answer=rollback_answer if answered else None,
                    rollback_done=rollback_done, errors=dict(load.errors), slowest=load.slowest)
    finally:
        site.kill()
        shutil.rmtree(site.home, ignore_errors=True)


def bench_runbook(work):
    site = Site(os.path.join(work, 'runbook'))
    app_dir = os.path.join(site.root, 'app')
    try:
        site.runbook_checkout('v1', app_dir)
        ecosystem = os.path.join(app_dir, 'ecosystem.config.js')
        site.pm2('start', ecosystem, '--only', 'api', '--env', 'production', cwd=app_dir)
        site.pm2('start', ecosystem, '--only', 'worker', '--env', 'production', cwd=app_dir)
        wait_version(site.port, 'v1')
        with Load(site.port) as load:
            started = time.monotonic()
            site.pm2('stop', 'api', cwd=app_dir)
            site.pm2('stop', 'worker', cwd=app_dir)
            site.runbook_checkout('v2', app_dir)
            site.pm2('start', ecosystem, '--only', 'api', '--env', 'production', cwd=app_dir)
            site.pm2('start', ecosystem, '--only', 'worker', '--env', 'production', cwd=app_dir)
            wait_version(site.port, 'v2')  # instead of the runbook's sleep 30
            deploy = time.monotonic() - started
        started = time.monotonic()
        site.runbook_checkout('v1', app_dir)
        site.pm2('restart', 'api', cwd=app_dir)
        site.pm2('restart', 'worker', cwd=app_dir)
        answered = wait_version(site.port, 'v1')
        rollback = time.monotonic() - started
        return dict(failed=load.failed, ok=load.ok, deploy=deploy, rollback_answer=rollback if answered else None,
                    rollback_done=rollback, errors=dict(load.errors), slowest=load.slowest)
    finally:
        site.kill()
        shutil.rmtree(site.home, ignore_errors=True)


def main():
    work = tempfile.mkdtemp(prefix='releases-bench-')
    try:
        role = bench_role(work)
        runbook = bench_runbook(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def secs(value):
        return '%.1fs' % value if value is not None else 'never'

    print('%-52s %16s %16s' % ('', 'runbook (PM2)', 'backend role'))
    print('%-52s %16s %16s' % ('(a/b) failed requests during the deploy', '%d of %d' % (runbook['failed'], runbook['ok'] + runbook['failed']),
                               '%d of %d' % (role['failed'], role['ok'] + role['failed'])))
    print('%-52s %16s %16s' % ('      deploy wall time', secs(runbook['deploy']), secs(role['deploy'])))
    print('%-52s %16s %16s' % ('(c) rollback: until the previous version answers', secs(runbook['rollback_answer']),
                               secs(role['rollback_answer'])))
    print('%-52s %16s %16s' % ('    rollback: until the command returns', secs(runbook['rollback_done']),
                               secs(role['rollback_done'])))
    print('%-52s %16s %16s' % ('      slowest answered request during the deploy', secs(runbook['slowest']),
                               secs(role['slowest'])))
    print('kinds of failed requests: runbook %s; backend role %s' % (runbook['errors'], role['errors']))


if __name__ == '__main__':
    main()
