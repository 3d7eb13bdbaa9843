"""tests/scripts/cpu_breakdown.py: accounting records read as the kernel writes them, each process counted in the layer
that started it and as its kind (a module run, a task worker, a controller), with pids reused during the run."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'scripts'))
import cpu_breakdown  # noqa: E402 (a script, not a package)


def _comp_t(ticks):
    """The kernel's encoding (kernel/acct.c, encode_comp_t): a 13-bit mantissa, a base-8 exponent, rounded once."""
    exponent = rnd = 0
    while ticks > 0x1fff:
        rnd = ticks & 4
        ticks >>= 3
        exponent += 1
    if rnd:
        ticks += 1
        if ticks > 0x1fff:
            ticks >>= 3
            exponent += 1
    return (exponent << 13) | ticks


def _record(command, pid, ppid, cpu_seconds, forked=False):
    ticks = int(round(cpu_seconds * 100))
    return cpu_breakdown.RECORD.pack(cpu_breakdown.AFORK if forked else 0, cpu_breakdown.ACCT_VERSION, 0, 0, 0, 0,
                                     pid, ppid, 0, 0.0, _comp_t(ticks), 0, 0, 0, 0, 0, 0, 0, command.encode())


@pytest.mark.parametrize('ticks', [0, 1, 8191, 8192, 12345, 987654])
def test_comp_t_decodes_what_the_kernel_encodes(ticks):
    decoded = cpu_breakdown.comp_t(_comp_t(ticks))
    assert abs(decoded - ticks) <= max(1, ticks // 1000)


def test_each_process_counts_in_its_layer_as_its_kind_across_a_reused_pid(tmp_path):
    # Records in the order processes end: children before parents. pid 14 is a module run under pytest, then,
    # reused, one under molecule; the controller of the second is ansible-runner's (python3).
    records = [
        _record('python3', 14, 13, 0.2), _record('sh', 13, 12, 0.0), _record('sh', 12, 11, 0.0),
        _record('ansible-playboo', 11, 10, 0.03, forked=True), _record('node', 15, 10, 0.25),
        _record('ansible-playboo', 10, 5, 2.5), _record('pytest', 5, 1, 1.0),
        _record('python', 14, 23, 0.3), _record('sh', 23, 22, 0.0), _record('sh', 22, 21, 0.0),
        _record('python3', 21, 20, 0.04, forked=True), _record('python3', 20, 6, 1.5), _record('molecule', 6, 1, 0.5),
        _record('postgres', 30, 2, 0.04, forked=True), _record('postgres', 2, 1, 0.1),
    ]
    path = tmp_path / 'acct'
    path.write_bytes(b''.join(records))

    processes = cpu_breakdown.read(str(path))
    assert [p.command for p in processes][:2] == ['python3', 'sh'] and processes[3].forked
    per_kind, per_command = cpu_breakdown.breakdown(processes)

    pytest_layer = {name: (count, round(cpu, 2)) for name, (count, cpu) in per_kind['pytest'].items()}
    assert pytest_layer == {'ansible module runs': (1, 0.2), 'task workers (forks of a Python controller)': (1, 0.03),
                            'ansible-playbook controllers': (1, 2.5), 'node (PM2, npm, Prisma, apps)': (1, 0.25),
                            'other': (3, 1.0)}
    molecule_layer = {name: (count, round(cpu, 2)) for name, (count, cpu) in per_kind['molecule'].items()}
    assert molecule_layer == {'ansible module runs': (1, 0.3), 'task workers (forks of a Python controller)': (1, 0.04),
                              'other python': (1, 1.5), 'other': (3, 0.5)}
    assert per_kind[cpu_breakdown.OUTSIDE]['postgres backends'] == [2, pytest.approx(0.14)]
    assert per_command['pytest']['ansible-playboo*'] == [1, pytest.approx(0.03)]


def test_a_file_that_is_not_version_3_accounting_is_refused(tmp_path):
    path = tmp_path / 'acct'
    path.write_bytes(b'\x00\x02' + b'\x00' * (cpu_breakdown.RECORD.size - 2))
    with pytest.raises(SystemExit, match='not a version 3 process-accounting file'):
        cpu_breakdown.read(str(path))
