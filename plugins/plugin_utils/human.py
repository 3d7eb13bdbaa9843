# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizes and durations as an operator reads them, for the controller-side plugins (the await_job heartbeats and the
deploy_report callback): one way of writing them everywhere a run shows them."""

from __future__ import annotations


def number(value, default=None):
    """value as a float, or default when it is not a number (a report field that was never filled in)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def size(count):
    """'512 bytes', '1.5 KiB', '2.0 GiB', '3.1 TiB'; 'n/a' when count is not a number."""
    count = number(count)
    if count is None:
        return 'n/a'
    for unit in ('bytes', 'KiB', 'MiB', 'GiB'):
        if count < 1024:
            break
        count /= 1024.0
    else:
        unit = 'TiB'
    return '%d bytes' % count if unit == 'bytes' else '%.1f %s' % (count, unit)


def duration(seconds, decimals=1):
    """'12.3 s' (with decimals=0, '12 s'), '4 min 05 s', '2 h 01 min'; 'n/a' when seconds is not a number."""
    seconds = number(seconds)
    if seconds is None:
        return 'n/a'
    if round(seconds, decimals) < 60:
        return '%.*f s' % (decimals, seconds)
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return '%d min %02d s' % (minutes, rest)
    hours, minutes = divmod(minutes, 60)
    return '%d h %02d min' % (hours, minutes)
