#!/usr/bin/env python
"""Benchmark: prisma_migrate engine=native against the real Prisma CLI (`prisma migrate deploy`), wall time.

Histories (each deploy starts from the same database state, made fresh per round):
  test project     tests/fixtures/prisma/app, 3 migrations, from empty
  LiteLLM          220 migrations (tests/scripts/prisma_history.py), from empty. The CLI here is Prisma 6.19.3 on
                   its offline JS engine, which splits scripts on ';' and stops at the first dollar-quoted block:
                   its time is the time to that failure, and the row says so.
  LiteLLM tail     the migrations after the last dollar-quoted one, on a database holding the others (applied
                   natively beforehand, not timed): the longest stretch both can apply
Per history: the CLI (`node node_modules/.bin/prisma migrate deploy`, DATABASE_URL in its environment), the native
engine as a task (`ansible localhost -m runbook.deploy.prisma_migrate -a engine=native`), and `ansible -m ping`
(the start-up every task pays). Medians of --rounds rounds, sides alternating which goes first.
Run with tests/scripts/env.sh and .stack/stack.env sourced: .venv/bin/python bench/prisma_native_bench.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'scripts'))
import prisma_history  # noqa: E402  pylint: disable=wrong-import-position
from prisma_history import dollar_quoted, migration_names  # noqa: E402  pylint: disable=wrong-import-position

APP = os.path.join(REPO, 'tests', 'fixtures', 'prisma', 'app')


def pg(dbname='postgres'):
    conn = psycopg2.connect(host=os.environ['RUNBOOK_PG_HOST'], port=int(os.environ['RUNBOOK_PG_PORT']),
                            user=os.environ['RUNBOOK_PG_USER'], password=os.environ['RUNBOOK_PG_PASSWORD'],
                            dbname=dbname)
    conn.autocommit = True
    return conn


def create_db():
    name = 'bench_prisma_%s' % uuid.uuid4().hex[:8]
    conn = pg()
    try:
        with conn.cursor() as cursor:
            cursor.execute('CREATE DATABASE %s' % name)
    finally:
        conn.close()
    url = 'postgresql://%s:%s@%s:%s/%s' % (os.environ['RUNBOOK_PG_USER'], os.environ['RUNBOOK_PG_PASSWORD'],
                                           os.environ['RUNBOOK_PG_HOST'], os.environ['RUNBOOK_PG_PORT'], name)
    return name, url


def drop_db(name):
    conn = pg()
    try:
        with conn.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)
    finally:
        conn.close()


def applied_count(name):
    conn = pg(name)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass('_prisma_migrations') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute('SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL '
                           'AND rolled_back_at IS NULL')
            return cursor.fetchone()[0]
    finally:
        conn.close()


def run_cli(project, url):
    env = dict(os.environ, DATABASE_URL=url, CHECKPOINT_DISABLE='1', PRISMA_HIDE_UPDATE_MESSAGE='1', NO_COLOR='1')
    started = time.monotonic()
    done = subprocess.run(['node', os.path.join(REPO, 'node_modules', '.bin', 'prisma'), 'migrate', 'deploy'],
                          cwd=project, env=env, capture_output=True, text=True, check=False)
    return time.monotonic() - started, done.returncode, done.stdout + done.stderr


def run_ansible(module, args):
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_STDOUT_CALLBACK='json')
    argv = ['ansible', 'localhost', '-m', module] + (['-a', json.dumps(args)] if args else [])
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    try:
        result = json.loads(done.stdout)['plays'][0]['tasks'][0]['hosts']['localhost']
    except (ValueError, KeyError, IndexError):
        raise SystemExit('ansible failed (%s):\n%s\n%s' % (done.returncode, done.stdout[-2000:], done.stderr[-2000:]))
    return seconds, result


def run_native(project, url):
    seconds, result = run_ansible('runbook.deploy.prisma_migrate',
                                  dict(state='deployed', engine='native', project_path=project, db_url=url))
    if result.get('failed'):
        raise SystemExit('native deploy failed: %s' % result.get('msg'))
    return seconds, result


def project_copy(source, workdir, label, keep=None):
    return prisma_history.copy_project(source, os.path.join(workdir, label), keep=keep)


def measure(label, project, prepare, rounds, expected):
    """Median seconds of the CLI and of the native task deploying project onto prepare()'s database."""
    cli_times, native_times, cli_applied, cli_rc = [], [], [], []
    for round_ in range(rounds):
        order = ('cli', 'native') if round_ % 2 == 0 else ('native', 'cli')
        for side in order:
            name, url = create_db()
            try:
                before = prepare(url)
                if side == 'cli':
                    seconds, rc, dummy = run_cli(project, url)
                    cli_times.append(seconds)
                    cli_rc.append(rc)
                    cli_applied.append(applied_count(name) - before)
                else:
                    seconds, result = run_native(project, url)
                    native_times.append(seconds)
                    if len(result['applied']) != expected:
                        raise SystemExit('%s: native applied %d, expected %d' % (label, len(result['applied']),
                                                                                 expected))
            finally:
                drop_db(name)
    return dict(label=label, expected=expected, cli=statistics.median(cli_times), cli_rc=max(cli_rc),
                cli_applied=min(cli_applied), native=statistics.median(native_times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    if not shutil.which('ansible') or not os.environ.get('RUNBOOK_PG_PORT'):
        raise SystemExit('source tests/scripts/env.sh and .stack/stack.env first')
    history = prisma_history.project()
    names = migration_names(history)
    dollars = [n for n in names if dollar_quoted(history, n)]
    cut = names.index(dollars[-1]) + 1
    workdir = tempfile.mkdtemp(prefix='prisma-bench-')
    try:
        app = project_copy(APP, workdir, 'app')
        litellm = project_copy(history, workdir, 'litellm')
        prefix = project_copy(history, workdir, 'litellm-prefix', keep=cut)

        def empty(url):
            return 0

        def with_prefix(url):
            run_native(prefix, url)
            return cut

        ping = statistics.median(run_ansible('ansible.builtin.ping', None)[0] for dummy in range(args.rounds))
        rows = [measure('test project, 3 migrations, from empty', app, empty, args.rounds, 3),
                measure('LiteLLM, %d migrations (%d with $$), from empty' % (len(names), len(dollars)), litellm,
                        empty, args.rounds, len(names)),
                measure('LiteLLM tail, last %d migrations' % (len(names) - cut), litellm, with_prefix, args.rounds,
                        len(names) - cut)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print('prisma migrate deploy (Prisma %s CLI, offline JS engine) vs prisma_migrate engine=native; median of %d '
          'rounds, seconds' % (cli_version(), args.rounds))
    print('%-48s %14s %14s %10s %s' % ('history', 'CLI', 'native task', 'CLI/native', 'CLI outcome'))
    for row in rows:
        outcome = ('applied %d/%d' % (row['cli_applied'], row['expected'])) if row['cli_rc'] == 0 else (
            'FAILED (rc %d) after applying %d of %d' % (row['cli_rc'], row['cli_applied'], row['expected']))
        ratio = row['cli'] / row['native']
        print('%-48s %14.2f %14.2f %10.1f %s' % (row['label'], row['cli'], row['native'], ratio, outcome))
    print('%-48s %14s %14.2f' % ('ansible -m ping (start-up in the native task)', '', ping))


def cli_version():
    with open(os.path.join(REPO, 'node_modules', 'prisma', 'package.json')) as handle:
        return json.load(handle)['version']


if __name__ == '__main__':
    main()
