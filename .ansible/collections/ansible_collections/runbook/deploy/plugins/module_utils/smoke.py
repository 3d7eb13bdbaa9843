# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Expectations of runbook.deploy.smoke_test: JSON subset and path matching, and the failure table.

Pure functions on plain values, so they are unit-tested without a server.
"""

from __future__ import annotations

import json
import re

_MISSING = object()
_PATH_TOKEN = re.compile(r'''\.?([^.\[\]"']+)|\[(-?\d+)\]|\[["']([^"']*)["']\]''')


class ExpectationError(Exception):
    """An expectation is malformed (not a failed check); the message is ready for fail_json."""


def parse_path(path):
    """'data.items[0]["a.b"]' -> ['data', 'items', 0, 'a.b']."""
    if not isinstance(path, str) or not path.strip():
        raise ExpectationError('JSON path %r is empty' % (path,))
    tokens = []
    position = 0
    text = path.strip()
    if text.startswith('$'):
        text = text[1:]
    while position < len(text):
        match = _PATH_TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ExpectationError("JSON path '%s' cannot be read at '%s'; write keys with dots and list indexes in "
                                   "brackets, e.g. checks.db.status or items[0].name" % (path, text[position:]))
        name, index, quoted = match.groups()
        if index is not None:
            tokens.append(int(index))
        elif quoted is not None:
            tokens.append(quoted)
        else:
            tokens.append(name)
        position = match.end()
    return tokens


def get_path(document, path):
    """The value at path in document, or _MISSING."""
    current = document
    for token in parse_path(path):
        if isinstance(token, int):
            if not isinstance(current, list) or not -len(current) <= token < len(current):
                return _MISSING
            current = current[token]
        elif isinstance(current, dict) and token in current:
            current = current[token]
        else:
            return _MISSING
    return current


def same(expected, actual):
    """JSON equality where true is not 1 and 1 equals 1.0."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return expected == actual
    return expected == actual


def subset_mismatches(expected, actual, where='$'):
    """Where actual does not contain expected: dicts by key (extra keys allowed), lists element-wise
    (every expected element must match some actual element), scalars by equality."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return ['%s is %s, expected an object' % (where, short(actual))]
        problems = []
        for key, value in expected.items():
            if key not in actual:
                problems.append('%s.%s is missing' % (where, key))
            else:
                problems.extend(subset_mismatches(value, actual[key], '%s.%s' % (where, key)))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return ['%s is %s, expected a list' % (where, short(actual))]
        problems = []
        for index, value in enumerate(expected):
            if not any(not subset_mismatches(value, candidate) for candidate in actual):
                problems.append('%s has no element matching %s' % (where, short(value)))
        return problems
    if same(expected, actual):
        return []
    return ['%s is %s, expected %s' % (where, short(actual), short(expected))]


def path_mismatches(expected_paths, document):
    problems = []
    for path, expected in (expected_paths or {}).items():
        value = get_path(document, path)
        if value is _MISSING:
            problems.append('%s is missing' % path)
        elif isinstance(expected, (dict, list)):
            problems.extend(subset_mismatches(expected, value, path))
        elif not same(expected, value):
            problems.append('%s is %s, expected %s' % (path, short(value), short(expected)))
    return problems


def short(value, limit=60):
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def compile_regex(pattern, name):
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ExpectationError("check '%s': expect_text is not a valid regular expression (%s)" % (name, exc))


def body_mismatches(text, expect_json=None, expect_json_paths=None, expect_text=None):
    """Problems of a response body (or WebSocket message) against the check's expectations."""
    problems = []
    if expect_text is not None and not expect_text.search(text):
        problems.append('body does not match /%s/: %s' % (expect_text.pattern, short(text, 120)))
    if expect_json is not None or expect_json_paths:
        try:
            document = json.loads(text)
        except ValueError:
            problems.append('body is not JSON: %s' % short(text, 120))
            return problems
        if expect_json is not None:
            problems.extend(subset_mismatches(expect_json, document))
        problems.extend(path_mismatches(expect_json_paths, document))
    return problems


def render_table(rows, columns):
    """A plain-text table: rows are dicts, columns (key, title) pairs."""
    cells = [[title for dummy, title in columns]]
    for row in rows:
        cells.append([cell(row.get(key)) for key, dummy in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for number, line in enumerate(cells):
        lines.append(' | '.join(text.ljust(widths[i]) for i, text in enumerate(line)).rstrip())
        if number == 0:
            lines.append('-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def cell(value, limit=100):
    if value is None:
        return '-'
    text = str(value).replace('\n', ' ')
    return text if len(text) <= limit else text[:limit - 3] + '...'
