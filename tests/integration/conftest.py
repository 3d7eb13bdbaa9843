"""Fixtures for integration tests: modules run for real against the local stack (tests/stack).

The stack must be running (``make test`` starts it); a missing stack is an error, not a skip.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid

import pytest

from helpers import REPO, sql


def _read_stack_env():
    stack_dir = os.environ.get('RUNBOOK_STACK_DIR', os.path.join(REPO, '.stack'))
    path = os.path.join(stack_dir, 'stack.env')
    if not os.path.exists(path):
        raise RuntimeError('%s is missing: start the local stack first (tests/stack/stack.py start, or make test)' % path)
    env = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line.startswith('export '):
                key, dummy, value = line[len('export '):].partition('=')
                env[key] = shlex.split(value)[0] if value else ''
    return env


@pytest.fixture(scope='session')
def stack():
    env = _read_stack_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith(('AWS_', 'PM2_HOME'))})
    return env


@pytest.fixture(scope='session')
def pg_conn_args(stack):
    return dict(login_host=stack['RUNBOOK_PG_HOST'], login_port=int(stack['RUNBOOK_PG_PORT']),
                login_user=stack['RUNBOOK_PG_USER'], login_password=stack['RUNBOOK_PG_PASSWORD'])


@pytest.fixture(scope='session')
def prisma_offline_setup():
    """The repository's Prisma CLI patched to run offline and exit when done (tests/scripts/prisma_setup.py).

    Bootstrap applies the patches after npm ci; this makes sure, once per session, for the tests that run the CLI.
    """
    done = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'scripts', 'prisma_setup.py')],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def make_db(stack):
    """Create uniquely named databases; drop them after the test."""
    created = []

    def factory(prefix='t', rows=100):
        name = '%s_%s' % (prefix, uuid.uuid4().hex[:8])
        sql(stack, 'postgres', 'CREATE DATABASE %s' % name)
        created.append(name)
        if rows is not None:
            sql(stack, name, """
                CREATE SCHEMA sales;
                CREATE TABLE public.users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, created timestamptz DEFAULT now());
                CREATE TABLE sales.orders (id bigserial PRIMARY KEY, user_id int REFERENCES public.users(id), total numeric(10,2));
                CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created := now(); RETURN NEW; END $$;
                INSERT INTO public.users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, %s) g;
                INSERT INTO sales.orders (user_id, total) SELECT 1 + g %% %s, g * 1.5 FROM generate_series(1, %s) g;
            """ % (rows, rows, rows * 3))
        return name

    yield factory
    for name in created:
        sql(stack, 'postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)


@pytest.fixture
def run_module(localhost):
    """Run a module on localhost: run_module('runbook.deploy.pg_backup', check=False, diff=False, **args) -> result."""

    def runner(module_name, /, check=False, diff=False, **args):
        dispatcher = localhost
        original = dispatcher._build_play_ds

        def build_play(complex_args):
            play = original(complex_args)
            action = play['tasks'][0]['action']
            play['tasks'][0] = dict(action=action['module'], args=action['args'], check_mode=check, diff=diff)
            return play

        dispatcher._build_play_ds = build_play
        try:
            result = getattr(dispatcher, module_name)(**args)
        finally:
            dispatcher._build_play_ds = original
        return dict(result['localhost'])

    return runner
