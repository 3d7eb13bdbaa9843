#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who runs this playbook, and is a recorded run still alive? Run on the controller (a pipe lookup of the
deployment role's lock tasks), with Linux's /proc.

  run_holder.py self              -> {"host": ..., "pid": N, "start": "..."} of the ansible-playbook process
                                     (pid 0 when it cannot be found: no /proc, or an unusual launcher)
  run_holder.py alive PID START   -> "alive", or "gone" when no process PID runs, or one started at another
                                     time runs under that pid (the pid was reused)

The lookup runs in one of ansible-playbook's worker processes (forks of the main process): the run is the
topmost of the consecutive ancestors whose command is ansible-playbook. Its start time (in clock ticks since
boot, /proc/PID/stat field 22) tells it apart from a later process given the same pid.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import socket
import sys

__metaclass__ = type


def _stat(pid):
    """(parent pid, start time) of pid; the command name in parentheses may hold spaces and parentheses."""
    with open('/proc/%d/stat' % pid) as handle:
        fields = handle.read()
    rest = fields[fields.rindex(')') + 2:].split()
    return int(rest[1]), rest[19]


def _is_playbook(pid):
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        argv = handle.read().split(b'\0')
    # `ansible-playbook ...` or `python .../ansible-playbook ...`; not a shell whose -c string names it.
    return any(os.path.basename(arg.decode('utf-8', 'replace')) == 'ansible-playbook' for arg in argv[:2])


def whoami():
    found = (0, '')
    pid = os.getppid()
    while pid > 1:
        try:
            parent, start = _stat(pid)
            if _is_playbook(pid):
                found = (pid, start)
            elif found[0]:
                break
        except (IOError, OSError, ValueError, IndexError):
            break
        pid = parent
    return {'host': socket.gethostname(), 'pid': found[0], 'start': found[1]}


def alive(pid, start):
    try:
        return 'alive' if _stat(int(pid))[1] == start else 'gone'
    except (IOError, OSError):
        return 'gone'


def main(argv):
    if argv[1:2] == ['self']:
        print(json.dumps(whoami()))
    elif argv[1:2] == ['alive'] and len(argv) == 4:
        print(alive(argv[2], argv[3]))
    else:
        sys.stderr.write('usage: run_holder.py self | alive PID START\n')
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
