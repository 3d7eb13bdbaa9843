"""Where the CPU of a test run went, per layer and per kind of process, from a process-accounting file.

CI's budget is CPU (two cores, every layer at once, both busy the whole run): the layers' totals say how much, not what
for. Linux's process accounting records every process that ends, with its CPU, its parent and its command name, so the
processes a layer started can be found by their ancestry, and the ones of a kind counted: an Ansible module run (a
Python started by /bin/sh under ansible-playbook), a task's worker (ansible-playbook forked without an exec), a
controller, the Node.js CLIs (PM2, npm, Prisma), PostgreSQL's backends. Measured this way (2026-12-08, one CI run,
2,407 CPU seconds in all), module runs took 779 s (3,591 runs, 0.22 s each), task workers 409 s (12,186 forks, 34 ms
each, mostly system time: the kernel copies and then drops the mappings of the controller's 50 MB), ansible-playbook
controllers 468 s (300 runs), daemons and the stack 252 s.

Usage (as root; the accounting is machine-wide, so switch it off again):
    touch /tmp/acct && accton /tmp/acct && make test; accton off
    .venv/bin/python tests/scripts/cpu_breakdown.py /tmp/acct
"""
import argparse
import bisect
import collections
import struct
import sys

# struct acct_v3 (linux/acct.h): flag, version, tty, exitcode, uid, gid, pid, ppid, btime, etime (float), then the
# comp_t counters utime, stime, mem, io, rw, minflt, majflt, swaps, and the command name (16 bytes).
RECORD = struct.Struct('<BBHIIIIIIf8H16s')
ACCT_VERSION = 3
AFORK = 0x01  # forked but never exec'd: ansible-playbook's task workers
TICKS_PER_SECOND = 100  # AHZ
LAYERS = ('pytest', 'molecule', 'ansible-test', 'ansible-lint', 'pip')
OUTSIDE = 'outside the layers (daemons, the stack)'


def comp_t(value):
    """comp_t: a 13-bit mantissa and a 3-bit base-8 exponent."""
    return (value & 0x1fff) << (3 * (value >> 13))


class Process(object):
    __slots__ = ('command', 'cpu', 'pid', 'ppid', 'forked')

    def __init__(self, command, cpu, pid, ppid, forked):
        self.command, self.cpu, self.pid, self.ppid, self.forked = command, cpu, pid, ppid, forked


def read(path):
    processes = []
    with open(path, 'rb') as handle:
        data = handle.read()
    for offset in range(0, len(data) - RECORD.size + 1, RECORD.size):
        fields = RECORD.unpack_from(data, offset)
        flag, version, pid, ppid = fields[0], fields[1], fields[6], fields[7]
        if version & 0x0f != ACCT_VERSION:
            raise SystemExit('%s: not a version 3 process-accounting file (record %d)' % (path, offset // RECORD.size))
        cpu = (comp_t(fields[10]) + comp_t(fields[11])) / TICKS_PER_SECOND
        command = fields[18].split(b'\0', 1)[0].decode('utf-8', 'replace')
        processes.append(Process(command, cpu, pid, ppid, bool(flag & AFORK)))
    return processes


class Tree(object):
    """Parents by record order: a process's record is written when it ends, its parent's later (pids are reused)."""

    def __init__(self, processes):
        self.processes = processes
        self.records_of = collections.defaultdict(list)
        for index, process in enumerate(processes):
            self.records_of[process.pid].append(index)

    def parent(self, index):
        later = self.records_of.get(self.processes[index].ppid, ())
        position = bisect.bisect_right(later, index)
        return later[position] if position < len(later) else None

    def ancestors(self, index, limit=64):
        index = self.parent(index)
        while index is not None and limit:
            yield self.processes[index]
            index, limit = self.parent(index), limit - 1


def kind(process, ancestors):
    command = process.command
    if command.startswith('python'):
        # An interpreter a task's worker (a fork of the controller, whatever its command name: ansible-runner's is
        # python3) started through /bin/sh -c: a module run.
        if len(ancestors) > 2 and ancestors[0].command == ancestors[1].command == 'sh' and ancestors[2].forked:
            return 'ansible module runs'
        return 'task workers (forks of a Python controller)' if process.forked else 'other python'
    if command.startswith('ansible-playboo'):
        return 'task workers (forks of a Python controller)' if process.forked else 'ansible-playbook controllers'
    if command == 'node':
        return 'node (PM2, npm, Prisma, apps)'
    if command.startswith('postgres'):
        return 'postgres backends'
    return 'other'


def breakdown(processes):
    """{layer: {kind: [processes, CPU seconds]}} and {layer: {command: [processes, CPU seconds]}}; a process belongs
    to the nearest layer among itself and its ancestors (the pytest, molecule... process that started it)."""
    tree = Tree(processes)
    per_kind = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
    per_command = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
    for index, process in enumerate(processes):
        ancestors = list(tree.ancestors(index))
        layer = next((a.command for a in [process] + ancestors if a.command in LAYERS), OUTSIDE)
        for table, key in ((per_kind, kind(process, ancestors)),
                           (per_command, process.command + ('*' if process.forked else ''))):
            table[layer][key][0] += 1
            table[layer][key][1] += process.cpu
    return per_kind, per_command


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('acct_file')
    parser.add_argument('--commands', type=int, default=8, help='commands listed per layer (default 8)')
    args = parser.parse_args(argv)

    processes = read(args.acct_file)
    per_kind, per_command = breakdown(processes)
    print('%d processes, %.0f CPU seconds' % (len(processes), sum(p.cpu for p in processes)))
    for layer, kinds in sorted(per_kind.items(), key=lambda item: -sum(v[1] for v in item[1].values())):
        print('\n%-46s %7.0f s' % (layer, sum(v[1] for v in kinds.values())))
        for name, (count, cpu) in sorted(kinds.items(), key=lambda item: -item[1][1]):
            print('  %-44s %7.0f s %7d processes %7.3f s each' % (name, cpu, count, cpu / count))
        commands = sorted(per_command[layer].items(), key=lambda item: -item[1][1])[:args.commands]
        print('  by command (* forked, no exec): ' + ', '.join('%s %.0f s' % (c, v[1]) for c, v in commands))
    return 0


if __name__ == '__main__':
    sys.exit(main())
