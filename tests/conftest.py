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
