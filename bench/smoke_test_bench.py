#!/usr/bin/env python
"""Benchmark: runbook.deploy.smoke_test against the runbook's curl sequence, 50 checks of 200 ms each.

Starts the local test server (tests/servers/smoke_server.py) on a free 127.0.0.1 port; every check is
GET /slow?ms=200, which answers after 200 ms. Prints, from one run:
  the curl sequence: `curl -fsS URL` 50 times, one after another (what the runbooks do by hand)
  smoke_test with concurrency=1 (one after another)
  smoke_test with concurrency=50                                               target: under 1 s
For smoke_test, "checks" is the module's own wall time for the checks (summary.elapsed) and "task" the whole
`ansible localhost -m runbook.deploy.smoke_test` run; `ansible -m ping` is timed too (the start-up every task pays).
Run with tests/scripts/env.sh sourced: .venv/bin/python bench/smoke_test_bench.py [--checks 50] [--ms 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'servers'))
from smoke_server import SmokeServer  # noqa: E402  pylint: disable=wrong-import-position


def ansible(module, args):
    """Run one ad-hoc task; return (seconds, parsed result)."""
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_STDOUT_CALLBACK='json')
    started = time.monotonic()
    argv = ['ansible', 'localhost', '-m', module] + (['-a', json.dumps(args)] if args else [])
    proc = subprocess.run(argv, env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    try:
        result = json.loads(proc.stdout)['plays'][0]['tasks'][0]['hosts']['localhost']
    except (ValueError, KeyError, IndexError):
        raise SystemExit('ansible failed (%s):\n%s\n%s' % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    if result.get('failed'):
        raise SystemExit('%s failed: %s' % (module, result.get('msg')))
    return seconds, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checks', type=int, default=50)
    parser.add_argument('--ms', type=int, default=200)
    args = parser.parse_args()
    if not shutil.which('ansible') or not os.environ.get('ANSIBLE_COLLECTIONS_PATH'):
        raise SystemExit('source tests/scripts/env.sh first')
    server = SmokeServer(websocket=False).start()
    try:
        url = '%s/slow?ms=%d' % (server.url, args.ms)
        checks = [dict(name='endpoint %02d' % i, url=url, expect_json={'status': 'healthy'}) for i in range(args.checks)]

        curl = shutil.which('curl')
        curl_seconds = None
        if curl:
            started = time.monotonic()
            for dummy in range(args.checks):
                subprocess.run([curl, '-fsS', '-o', '/dev/null', url], check=True)
            curl_seconds = time.monotonic() - started

        ping_seconds, dummy = ansible('ansible.builtin.ping', {})
        serial_task, serial = ansible('runbook.deploy.smoke_test', dict(checks=checks, concurrency=1))
        parallel_task, parallel = ansible('runbook.deploy.smoke_test', dict(checks=checks, concurrency=args.checks))
    finally:
        server.stop()

    for result in (serial, parallel):
        assert result['summary']['passed'] == args.checks, result['summary']
    serial_checks = serial['summary']['elapsed']
    parallel_checks = parallel['summary']['elapsed']
    print('%d checks, each answering after %d ms (ideal sequential: %.1f s)' % (args.checks, args.ms, args.checks * args.ms / 1000.0))
    if curl_seconds is not None:
        print('curl sequence (one after another)         %7.2f s' % curl_seconds)
    print('smoke_test concurrency=1   checks %7.2f s   task %6.2f s' % (serial_checks, serial_task))
    print('smoke_test concurrency=%-3d checks %7.2f s   task %6.2f s   (target: checks under 1 s: %s)'
          % (args.checks, parallel_checks, parallel_task, 'met' if parallel_checks < 1 else 'MISSED'))
    print('ansible -m ping (start-up every task pays)                  %6.2f s' % ping_seconds)
    print('ratio sequential/concurrent (checks)       %7.1fx' % (serial_checks / parallel_checks))
    if curl_seconds is not None:
        print('ratio curl sequence/concurrent task       %7.1fx' % (curl_seconds / parallel_task))


if __name__ == '__main__':
    main()
