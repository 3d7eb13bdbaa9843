"""Test order for parallel runs: the longest tests first; a class of tests is one unit of work.

`make test` runs pytest with several workers (pytest-xdist, `-n 4 --dist load`). The scheduler below hands a worker
the next unit of work whenever it has two tests or fewer left. A unit is one test, or every test of a class: the
tests of a class continue from one another (they share a class-scoped environment), so they run on one worker, in
order. (xdist's own `--dist loadgroup` should do that with `xdist_group` marks, but with pytest 9.2 and
pytest-xdist 3.8 it split a group's tests between workers.) Classes go first, then the single tests in this order.

The end-to-end playbook runs take minutes each while most tests take a second: left where they are collected, they
would reach the workers last and leave one worker running alone at the end. So they go first, and the short tests
fill the gaps (longest processing time first). Within each rank the order stays the order pytest collected."""

from __future__ import annotations

import os
import resource

import pytest

# Tests that run whole playbooks against the sample app (minutes each), then other tests marked slow, then the rest.
LONGEST_FIRST = (
    os.path.join('tests', 'integration', 'playbooks') + os.sep,
    os.path.join('tests', 'integration', 'roles') + os.sep,
)


def _rank(item):
    path = os.path.relpath(str(item.path), str(item.config.rootpath))
    if path.startswith(LONGEST_FIRST):
        return 0
    if item.get_closest_marker('slow'):
        return 1
    return 2


def pytest_collection_modifyitems(items):
    items[:] = sorted(items, key=_rank)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class OneTestOrOneClassScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            # path::Class::test[params] -> path::Class; path::test[params] -> itself.
            parts = nodeid.split('[', 1)[0].split('::')
            return '::'.join(parts[:2]) if len(parts) > 2 else nodeid

    return OneTestOrOneClassScheduling(config, log)


# CI's budget is CPU (two cores, every layer at once): beside --durations (wall time, which the other layers inflate),
# the CPU each test cost is measured, with the processes it waited for (ansible-playbook and its modules, the Prisma
# CLI; not the daemons it started, such as PM2's), and the most costly are listed at the end of the run.
CPU_PROPERTY = 'cpu_seconds'
CPU_LISTED = 25
CPU_AT_START = pytest.StashKey[float]()


def _cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[CPU_AT_START] = _cpu_seconds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # The teardown report is a test's last one: it carries the CPU of the setup, the call and the teardown.
    outcome = yield
    if call.when == 'teardown' and CPU_AT_START in item.stash:
        outcome.get_result().user_properties.append((CPU_PROPERTY, round(_cpu_seconds() - item.stash[CPU_AT_START], 1)))


def pytest_terminal_summary(terminalreporter):
    costs = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, 'when', None) != 'teardown':
                continue
            for name, value in getattr(report, 'user_properties', ()):
                if name == CPU_PROPERTY:
                    costs[report.nodeid] = value
    if not costs:
        return
    terminalreporter.write_sep('=', 'CPU seconds of the %d most costly tests (with the processes they waited for)'
                               % min(CPU_LISTED, len(costs)))
    for nodeid, value in sorted(costs.items(), key=lambda item: -item[1])[:CPU_LISTED]:
        terminalreporter.write_line('%8.1f  %s' % (value, nodeid))
    terminalreporter.write_line('%8.1f  all %d tests' % (sum(costs.values()), len(costs)))
