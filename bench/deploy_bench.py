#!/usr/bin/env python
"""Benchmark: the local staging deployment and the rollback, playbooks against the runbook's commands by hand.

Each round makes two fresh environments on the local stack (playbooks/local_sample_app.yml prepares both: the
database with 5,000 cases, the buckets, the CloudFront distribution) and runs, step by step, alternating which
side goes first from one round to the next:
  (1) deploy v1.0.0, the first deployment (baseline + migrations, backup, backend release, frontend, flag rollout,
      watch window)       playbooks/deploy_staging.yml            vs  bench/runbook_by_hand.sh deploy v1.0.0
  (2) deploy v1.1.0 (backup, no migration, release switch + PM2 reload, frontend)
                          playbooks/deploy_staging.yml            vs  bench/runbook_by_hand.sh deploy v1.1.0 v1.0.0
  (3) roll back to v1.0.0 playbooks/rollback.yml -e rollback_database=keep  vs  runbook_by_hand.sh rollback v1.0.0
      timed until http://127.0.0.1:<port>/health answers v1.0.0 (a thread polls it every 50 ms) and in total.

The playbook's phases come from its history line (<stack dir>/history/<env>.jsonl): check is from the start of
the ansible-playbook process to the first phase's start (build); each phase runs until the next one starts (the
fractions of a second between plays count to the earlier phase), finish from the last phase's end until the
process exits. The shell prints when each of its phases starts. Ansible overhead = playbook - by hand.
Both sides do the fixed waits the local inventory configures (watch window 4 s, 1 s after each of the two rollout
steps, 1 s PM2 stability after a start or reload); the runbook's `sleep 30` is replaced by polling /health.

Run: `source tests/scripts/env.sh && source .stack/stack.env && .venv/bin/python bench/deploy_bench.py [--rounds 3]`
(a round takes about 5 minutes). `--aws boto3` makes the shell use boto3 one-liners instead of the aws CLI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

import boto3
import psycopg2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOK = os.path.join(REPO, '.venv', 'bin', 'ansible-playbook')
PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
PM2 = os.path.join(REPO, 'node_modules', '.bin', 'pm2')
BY_HAND = os.path.join(REPO, 'bench', 'runbook_by_hand.sh')
INVENTORY = os.path.join(REPO, 'inventories', 'local')
TARGETS = {'deploy': 90.0, 'rollback': 15.0}
DEPLOY_PHASES = ['check', 'build', 'database', 'backends', 'release', 'finish']
ROLLBACK_PHASES = ['check', 'rollback', 'finish']


def env_or_die(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit('%s is not set: source tests/scripts/env.sh and .stack/stack.env (the stack must run)' % name)
    return value


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def load():
    return '%.2f %.2f %.2f' % os.getloadavg()


def pg_conn(dbname='postgres'):
    conn = psycopg2.connect(host=env_or_die('RUNBOOK_PG_HOST'), port=int(env_or_die('RUNBOOK_PG_PORT')),
                            user=env_or_die('RUNBOOK_PG_USER'), password=env_or_die('RUNBOOK_PG_PASSWORD'),
                            dbname=dbname)
    conn.autocommit = True
    return conn


class HealthPoll(threading.Thread):
    """GET /health every 50 ms; ``answered`` is the time.time() when it first answered ``version``."""

    def __init__(self, port, version):
        super().__init__(daemon=True)
        self.url = 'http://127.0.0.1:%d/health' % port
        self.version = version
        self.answered = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and self.answered is None:
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    if json.loads(response.read()).get('version') == self.version:
                        self.answered = time.time()
                        return
            except Exception:  # pylint: disable=broad-except
                pass
            self.stop.wait(0.05)


class Environment(object):
    """One local environment (its own database, buckets, port, PM2 home) under the round's directory."""

    def __init__(self, root, name):
        self.root = root
        self.name = name
        self.port = free_port()
        self.db = 'sample_app_' + name.replace('-', '_')
        self.env_root = os.path.join(root, 'deploy', name)
        self.extra = {'runbook_environment': name, 'runbook_stack_dir': root, 'sample_app_port': self.port}

    def process_env(self):
        env = dict(os.environ, RUNBOOK_REPO=REPO, ANSIBLE_FORCE_COLOR='0', ANSIBLE_NOCOLOR='1')
        env.pop('PM2_HOME', None)  # the stack's PM2: never for apps
        env.pop('RUNBOOK_WEBHOOK_URL', None)  # no notifications on either side
        return env

    def run(self, argv, log, env, poll=None):
        """Run a command; returns (start, end) as time.time(), and the poll's answer time when given one."""
        with open(log, 'w') as handle:
            start = time.time()
            proc = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
            if poll:
                poll.start()
            try:
                proc.wait(timeout=900)
            finally:
                if poll:
                    poll.stop.set()
            end = time.time()
        if proc.returncode != 0:
            with open(log) as handle:
                raise SystemExit('%s failed (rc=%s), log %s:\n%s' % (argv[1:3], proc.returncode, log,
                                                                     handle.read()[-4000:]))
        return start, end

    def play(self, playbook, log, **extra):
        argv = [PLAYBOOK, '-i', INVENTORY, os.path.join(REPO, 'playbooks', playbook),
                '-e', json.dumps(dict(self.extra, **extra))]
        return argv, self.process_env()

    def prepare(self):
        argv, env = self.play('local_sample_app.yml', None)
        self.run(argv, os.path.join(self.root, self.name + '.prepare.log'), env)

    def history(self):
        with open(os.path.join(self.root, 'history', self.name + '.jsonl')) as handle:
            return json.loads([line for line in handle if line.strip()][-1])


def playbook_step(env, playbook, label, answer_version=None, **extra):
    argv, penv = env.play(playbook, None, **extra)
    poll = HealthPoll(env.port, answer_version) if answer_version else None
    start, end = env.run(argv, os.path.join(env.root, '%s.%s.log' % (env.name, label)), penv, poll)
    entry = env.history()
    if entry.get('status') != 'succeeded':
        raise SystemExit('%s: history says %s: %s' % (label, entry.get('status'), entry.get('failure')))
    phases = entry['phases']
    names = sorted(phases, key=lambda name: phases[name]['start_epoch'])
    marks = [start] + [phases[name]['start_epoch'] for name in names] + [phases[names[-1]]['end_epoch'], end]
    result = {'check': marks[1] - marks[0]}
    for index, name in enumerate(names):
        result[name] = marks[index + 2] - marks[index + 1]
    result['finish'] = end - marks[-2]
    result['total'] = end - start
    if poll:
        result['answered'] = (poll.answered - start) if poll.answered else None
    return result


def hand_step(env, args, label, answer_version=None, aws='cli'):
    penv = env.process_env()
    url = 'postgresql://%s:%s@%s:%s/%s' % (
        urllib.parse.quote(os.environ['RUNBOOK_PG_USER'], safe=''),
        urllib.parse.quote(os.environ['RUNBOOK_PG_PASSWORD'], safe=''),
        os.environ['RUNBOOK_PG_HOST'], os.environ['RUNBOOK_PG_PORT'], env.db)
    distribution = open(os.path.join(env.env_root, 'cloudfront_distribution_id')).read().strip()
    penv.update(BENCH_ENV=env.name, BENCH_ROOT=env.env_root, BENCH_PORT=str(env.port), BENCH_PYTHON=PYTHON,
                BENCH_DISTRIBUTION_ID=distribution, DATABASE_URL=url, PGHOST=os.environ['RUNBOOK_PG_HOST'],
                PGPORT=os.environ['RUNBOOK_PG_PORT'], PGUSER=os.environ['RUNBOOK_PG_USER'],
                PGPASSWORD=os.environ['RUNBOOK_PG_PASSWORD'], PGDATABASE=env.db)
    penv['BENCH_AWS'] = aws
    poll = HealthPoll(env.port, answer_version) if answer_version else None
    marks_log = os.path.join(env.root, '%s.%s.marks' % (env.name, label))
    start, end = env.run(['bash', BY_HAND] + args, marks_log, penv, poll)
    marks = []
    with open(marks_log) as handle:
        for line in handle:
            if line.startswith('@phase '):
                dummy, name, epoch = line.split()
                marks.append((name, float(epoch)))
    result = {}
    names = [name for name, dummy in marks]
    if names[0] != 'check':  # the rollback by hand has no check: its commands start at once
        result['check'] = marks[0][1] - start
    for (name, epoch), (dummy, following) in zip(marks, marks[1:]):
        result[name] = following - epoch
    result['finish'] = end - marks[-1][1]
    result['total'] = end - start
    if poll:
        result['answered'] = (poll.answered - start) if poll.answered else None
    return result


def cleanup(root, envs, keep_logs=None):
    """PM2 daemons, databases, buckets and backups of the round's environments, then its directory."""
    if keep_logs:
        os.makedirs(keep_logs, exist_ok=True)
        for name in os.listdir(root):
            if name.endswith(('.log', '.marks')):
                shutil.copy(os.path.join(root, name), keep_logs)
        for env in envs:
            for name in ('by_hand.log',):
                if os.path.exists(os.path.join(env.env_root, name)):
                    shutil.copy(os.path.join(env.env_root, name), os.path.join(keep_logs, env.name + '.' + name))
    for dirpath, dirnames, dummy in os.walk(root):
        if os.path.basename(dirpath) == 'pm2':
            subprocess.run([PM2, 'kill'], env=dict(os.environ, PM2_HOME=dirpath), capture_output=True, check=False)
            dirnames[:] = []
    conn = pg_conn()
    try:
        with conn.cursor() as cursor:
            for env in envs:
                cursor.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % env.db)
    finally:
        conn.close()
    s3 = boto3.client('s3', endpoint_url=os.environ['RUNBOOK_S3_ENDPOINT_URL'], region_name='us-east-1')
    for env in envs:
        for bucket, prefix in (('sample-app-frontend-' + env.name, ''), ('sample-app-backups', env.name + '/')):
            try:
                for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix):
                    for item in page.get('Contents', []):
                        s3.delete_object(Bucket=bucket, Key=item['Key'])
                if prefix == '':
                    s3.delete_bucket(Bucket=bucket)
            # The bucket or objects were not created when the round failed early.
            except Exception:  # pylint: disable=broad-except
                pass
    shutil.rmtree(root, ignore_errors=True)


def one_round(number, hand_first, aws, keep_logs=None):
    rid = uuid.uuid4().hex[:6]
    # A short root: PM2's socket paths must stay under the 108 bytes a unix socket path may have.
    root = tempfile.mkdtemp(prefix='dbench-', dir='/tmp')
    pb = Environment(root, 'local-bench-%s-pb' % rid)
    sh = Environment(root, 'local-bench-%s-sh' % rid)
    loads = [load()]
    try:
        pb.prepare()
        sh.prepare()
        steps = [
            ('deploy 1 (v1.0.0, first deploy)',
             lambda: playbook_step(pb, 'deploy_staging.yml', 'deploy1', runbook_version='v1.0.0'),
             lambda: hand_step(sh, ['deploy', 'v1.0.0'], 'deploy1', aws=aws)),
            ('deploy 2 (v1.1.0)',
             lambda: playbook_step(pb, 'deploy_staging.yml', 'deploy2', runbook_version='v1.1.0'),
             lambda: hand_step(sh, ['deploy', 'v1.1.0', 'v1.0.0'], 'deploy2', aws=aws)),
            ('rollback (to v1.0.0, database kept)',
             lambda: playbook_step(pb, 'rollback.yml', 'rollback', answer_version='v1.0.0', rollback_database='keep'),
             lambda: hand_step(sh, ['rollback', 'v1.0.0'], 'rollback', answer_version='v1.0.0', aws=aws)),
        ]
        results = []
        for title, playbook, by_hand in steps:
            if hand_first:
                hand = by_hand()
                loads.append(load())
                book = playbook()
            else:
                book = playbook()
                loads.append(load())
                hand = by_hand()
            loads.append(load())
            results.append((title, book, hand))
        return results, loads
    finally:
        cleanup(root, [pb, sh], keep_logs and os.path.join(keep_logs, 'round%d' % number))


def fmt(value, width=10):
    return ('%*.2f' % (width, value)) if value is not None else ('%*s' % (width, '-'))


def table(results, label):
    print('\n%s' % label)
    print('%-40s %10s %10s %7s %12s' % ('phase', 'playbook s', 'by hand s', 'ratio', 'overhead s'))
    for title, book, hand in results:
        kind = 'rollback' if title.startswith('rollback') else 'deploy'
        print(title)
        rows = (ROLLBACK_PHASES + ['answered']) if kind == 'rollback' else DEPLOY_PHASES
        for name in rows + ['total']:
            b, h = book.get(name), hand.get(name, 0.0 if name in ('check', 'finish') else None)
            caption = 'until v1.0.0 answers' if name == 'answered' else name
            ratio = ('%7.2f' % (b / h)) if b is not None and h else '%7s' % '-'
            overhead = fmt(b - h, 12) if b is not None and h is not None else '%12s' % '-'
            target = ''
            if name == 'total' or (name == 'answered'):
                goal = TARGETS[kind]
                target = '  target < %g s: playbook %s, by hand %s' % (
                    goal, 'met' if b is not None and b < goal else 'MISSED', 'met' if h is not None and h < goal else 'MISSED')
            print('  %-38s %s %s %s %s%s' % (caption, fmt(b), fmt(h), ratio, overhead, target))


def median_results(rounds):
    merged = []
    for index, (title, dummy, dummy2) in enumerate(rounds[0]):
        sides = []
        for side in (1, 2):
            keys = rounds[0][index][side].keys()
            sides.append({k: statistics.median([r[index][side][k] for r in rounds if r[index][side].get(k) is not None])
                          for k in keys})
        merged.append((title, sides[0], sides[1]))
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--aws', choices=['auto', 'boto3'], default='auto',
                        help='the shell uses the aws CLI when it runs (auto) or boto3 one-liners (boto3)')
    parser.add_argument('--keep-logs', metavar='DIR', help='copy the playbook logs and the shell traces here')
    args = parser.parse_args()
    for name in ('RUNBOOK_PG_HOST', 'RUNBOOK_S3_ENDPOINT_URL', 'RUNBOOK_REDIS_URL', 'AWS_ACCESS_KEY_ID'):
        env_or_die(name)
    aws_cli = args.aws == 'auto' and subprocess.run(['aws', '--version'], capture_output=True, check=False).returncode == 0
    aws = 'cli' if aws_cli else 'boto3'
    started = datetime.datetime.now().astimezone()
    print('deploy_bench: %d round(s), %s, %d cores, load average at start %s; shell AWS calls: %s' % (
        args.rounds, started.strftime('%Y-%m-%d %H:%M %Z'), os.cpu_count(), load(),
        'aws CLI (--endpoint-url moto)' if aws_cli else 'boto3 one-liners (stand-in for the aws CLI)'), flush=True)
    rounds = []
    all_loads = []
    for number in range(1, args.rounds + 1):
        results, loads = one_round(number, hand_first=number % 2 == 0, aws=aws, keep_logs=args.keep_logs)
        rounds.append(results)
        all_loads.extend(loads)
        table(results, 'round %d (%s first; load average (1 min) during the round: %s)' % (
            number, 'by hand' if number % 2 == 0 else 'playbook', ', '.join(l.split()[0] for l in loads)))
        sys.stdout.flush()
    if len(rounds) > 1:
        table(median_results(rounds), 'median of %d rounds' % len(rounds))
        print('\neach round, totals (playbook / by hand):')
        for number, results in enumerate(rounds, 1):
            totals = ['%s %.1f / %.1f' % (t.split(' (')[0], b['total'], h['total']) for t, b, h in results]
            print('  round %d: %s' % (number, '; '.join(totals)))
    ones = [float(l.split()[0]) for l in all_loads]
    print('\nload average (1 min) over the run: min %.2f, median %.2f, max %.2f; at the end %s' % (
        min(ones), statistics.median(ones), max(ones), load()))
    print('fixed waits on both sides: deploy 1 and 2: 4 s watch window + 2 x 1 s rollout pause + 1 s PM2 '
          'stability = 7 s; rollback: 1 s PM2 stability')


if __name__ == '__main__':
    main()
