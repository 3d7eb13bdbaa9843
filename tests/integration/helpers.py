"""Helpers shared by the integration tests (importable as ``helpers``: pytest.ini puts this folder on sys.path)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import psycopg2
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def connect(stack, dbname='postgres'):
    conn = psycopg2.connect(host=stack['RUNBOOK_PG_HOST'], port=int(stack['RUNBOOK_PG_PORT']),
                            user=stack['RUNBOOK_PG_USER'], password=stack['RUNBOOK_PG_PASSWORD'], dbname=dbname)
    conn.autocommit = True
    return conn


def sql(stack, dbname, statement, args=None):
    conn = connect(stack, dbname)
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall() if cursor.description else None
    finally:
        conn.close()


def assert_clear_failure(result, *fragments):
    """The module failed with a message naming every fragment, and no traceback as the message."""
    assert result.get('failed'), result
    msg = result.get('msg', '')
    assert 'Traceback' not in msg, msg
    for fragment in fragments:
        assert fragment in msg, 'expected %r in %r' % (fragment, msg)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def processes(*markers):
    """[(pid, cmdline bytes)] of running processes whose command line holds every marker."""
    wanted = [m.encode() if isinstance(m, str) else m for m in markers]
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if all(m in cmdline for m in wanted):
            found.append((int(pid), cmdline))
    return found


class ProcessWatcher(threading.Thread):
    """Watch /proc while a module runs, for processes whose command line holds every marker.

    Ansible's task queue needs the main thread (signals), so the module runs there and this thread watches.
    ``seen`` maps pid -> cmdline of every sighting; ``on_seen(pid, cmdline)``, if given, is called for each one
    (it may inspect /proc/<pid>/environ or kill the process).
    """

    def __init__(self, *markers, on_seen=None):
        super().__init__(daemon=True)
        self.markers = markers
        self.on_seen = on_seen
        self.done = threading.Event()
        self.seen = {}

    def run(self):
        while not self.done.is_set():
            for pid, cmdline in processes(*self.markers):
                self.seen[pid] = cmdline
                if self.on_seen:
                    self.on_seen(pid, cmdline)
            time.sleep(0.01)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


class RequestLoop(object):
    """Calls request() again and again while a `with` block runs (so bounded by that block), `interval` seconds apart,
    and keeps what failed: an exception, or a status outside 2xx when request() returns a number. The zero-downtime
    tests assert that nothing failed while a reload, a rehome or an adoption ran."""

    def __init__(self, request, interval):
        self.request, self.interval = request, interval
        self.failures, self.answers = [], 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name='request-loop', daemon=True)

    def run(self):
        while not self.done.is_set():
            try:
                answer = self.request()
                self.answers += 1
                if isinstance(answer, int) and not 200 <= answer < 300:
                    self.failures.append(answer)
            except Exception as exc:  # pylint: disable=broad-except
                self.failures.append(repr(exc))
            self.done.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def play_on_localhost(tmp_path, plays, name='play.yml', timeout=240, env=None, extra_args=()):
    """Write plays (a list of play dicts) to tmp_path/name and run them with ansible-playbook on localhost through
    the local connection (with extra_args, such as --check); return (exit code, stdout + stderr)."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    proc = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                           str(path)] + list(extra_args), capture_output=True, text=True, check=False, timeout=timeout,
                          env=env)
    return proc.returncode, proc.stdout + proc.stderr
