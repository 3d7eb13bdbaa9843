"""Test order for parallel runs: the longest tests first.

`make test` runs pytest with several workers (pytest-xdist `--dist load --maxschedchunk 1`): each worker takes the
next test in this order whenever it is free. The end-to-end playbook runs take minutes each while most tests take a
second: left where they are collected, they would reach the workers last (or, in bigger chunks, all one worker),
and leave one worker running alone at the end. So they go first, one per free worker, and the short tests fill the
gaps (longest processing time first). Within each rank the order stays the order pytest collected.
"""

from __future__ import annotations

import os

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
