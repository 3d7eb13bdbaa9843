"""Sizes and durations as the heartbeats and the deployment report write them."""

from __future__ import annotations

import pytest

from ansible_collections.runbook.deploy.plugins.plugin_utils import human


@pytest.mark.parametrize('count, text', [
    (0, '0 bytes'), (1023, '1023 bytes'), (1024, '1.0 KiB'), (1536, '1.5 KiB'), (5 * 1024 ** 2, '5.0 MiB'),
    (3 * 1024 ** 3, '3.0 GiB'), (2 * 1024 ** 4, '2.0 TiB'), (5000 * 1024 ** 4, '5000.0 TiB'), ('2048', '2.0 KiB'),
    (None, 'n/a'), ('lots', 'n/a'),
])
def test_size(count, text):
    assert human.size(count) == text


@pytest.mark.parametrize('seconds, decimals, text', [
    (0, 1, '0.0 s'), (12.34, 1, '12.3 s'), (12.6, 0, '13 s'), (59.4, 0, '59 s'), (59.9, 0, '1 min 00 s'), (60, 1, '1 min 00 s'),
    (245, 1, '4 min 05 s'), (3599.6, 1, '1 h 00 min'), (3600, 1, '1 h 00 min'), (7290, 0, '2 h 01 min'),
    ('75', 1, '1 min 15 s'), (None, 1, 'n/a'), ('soon', 0, 'n/a'),
])
def test_duration(seconds, decimals, text):
    assert human.duration(seconds, decimals) == text
