# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics of runbook.deploy.metrics_watch: the Prometheus text format, selectors, and thresholds over time.

Pure functions and small classes on plain values (no network, no clock of their own: callers pass the time),
so they are unit-tested without a server.

- ``parse_prometheus(text)`` reads the text exposition format (0.0.4, and the OpenMetrics lines it shares):
  ``# HELP``/``# TYPE`` lines, other comments, label values with ``\\"``, ``\\\\`` and ``\\n`` escapes,
  ``+Inf``/``-Inf``/``NaN``, optional timestamps and exemplars.
- ``Selector`` is ``name{label="v",other=~"re"}``: it picks series and aggregates them (sum, max, min, avg,
  count), or turns ``<name>_bucket`` series into a quantile as PromQL's ``histogram_quantile`` does.
- ``Threshold`` keeps the breach state of one threshold across samples (``for`` seconds, rates of counters).
"""

from __future__ import annotations

import math
import re

from ansible_collections.runbook.deploy.plugins.module_utils import smoke

OPS = {
    '<': (lambda v, limit: v < limit),
    '<=': (lambda v, limit: v <= limit),
    '>': (lambda v, limit: v > limit),
    '>=': (lambda v, limit: v >= limit),
}
# max / min are spelled as limits: the value may go up to (down to) the limit.
OP_ALIASES = {'max': '<=', 'min': '>='}
AGGREGATIONS = ('sum', 'max', 'min', 'avg', 'count')
SEVERITIES = ('immediate', 'conditional')

_NAME = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*')
_LABEL_NAME = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*')
_MATCH_OP = re.compile(r'\s*(=~|!~|!=|=)\s*')
_ESCAPES = {'\\': '\\', '"': '"', 'n': '\n'}


class MetricsError(Exception):
    """Input that cannot be read (a selector, a threshold, a metrics page); the message is ready for fail_json."""


class Missing(Exception):
    """No value for this sample (metric absent, empty histogram, first sample of a rate); not a failure."""


# -- Prometheus text exposition format --------------------------------------------------------------

class Exposition(object):
    """A parsed metrics page: samples [(name, labels dict, value)], types {family: type}, families (names seen)."""

    def __init__(self):
        self.samples = []
        self.types = {}
        self.families = set()

    def has(self, name):
        return name in self.families


def parse_float(text):
    lowered = text.lower()
    if lowered in ('+inf', 'inf'):
        return float('inf')
    if lowered == '-inf':
        return float('-inf')
    if lowered == 'nan':
        return float('nan')
    try:
        return float(text)
    except ValueError:
        raise MetricsError('%r is not a number' % text)


def _read_label_value(line, position):
    """line[position] is the opening quote; return (value, position after the closing quote)."""
    chars = []
    position += 1
    while position < len(line):
        char = line[position]
        if char == '\\' and position + 1 < len(line):
            following = line[position + 1]
            chars.append(_ESCAPES.get(following, '\\' + following))
            position += 2
            continue
        if char == '"':
            return ''.join(chars), position + 1
        chars.append(char)
        position += 1
    raise MetricsError('unterminated label value')


def _read_labels(line, position, allow_ops=False):
    """line[position] is '{'; return ([(name, op, value)], position after '}')."""
    labels = []
    position += 1
    while True:
        while position < len(line) and line[position] in ' \t,':
            position += 1
        if position >= len(line):
            raise MetricsError("missing '}'")
        if line[position] == '}':
            return labels, position + 1
        match = _LABEL_NAME.match(line, position)
        if not match:
            raise MetricsError('bad label name at %r' % line[position:position + 20])
        name = match.group(0)
        op_match = _MATCH_OP.match(line, match.end())
        if not op_match or (not allow_ops and op_match.group(1) != '='):
            raise MetricsError("expected '=' after label %s" % name)
        position = op_match.end()
        if position >= len(line) or line[position] != '"':
            raise MetricsError('label %s: the value must be in double quotes' % name)
        value, position = _read_label_value(line, position)
        labels.append((name, op_match.group(1), value))


def _family(name, types):
    """The family a sample belongs to: http_seconds_bucket -> http_seconds when that is a histogram."""
    for suffix in ('_bucket', '_count', '_sum', '_created', '_total', '_gsum', '_gcount'):
        if name.endswith(suffix) and name[:-len(suffix)] in types:
            return name[:-len(suffix)]
    return name


def parse_prometheus(text):
    """Parse a metrics page; raise MetricsError naming the line that cannot be read."""
    result = Exposition()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith('#'):
            parts = line[1:].split(None, 3)
            if len(parts) >= 3 and parts[0] in ('TYPE', 'HELP', 'UNIT'):
                result.families.add(parts[1])
                if parts[0] == 'TYPE':
                    result.types[parts[1]] = parts[2].lower()
            continue
        try:
            match = _NAME.match(line)
            if not match:
                raise MetricsError('no metric name')
            name = match.group(0)
            position = match.end()
            labels = {}
            if position < len(line) and line[position] == '{':
                pairs, position = _read_labels(line, position)
                labels = dict((k, v) for k, dummy, v in pairs)
            rest = line[position:].split('#', 1)[0].split()  # drop an OpenMetrics exemplar
            if not rest:
                raise MetricsError('no value')
            value = parse_float(rest[0])
        except MetricsError as exc:
            raise MetricsError('line %d of the metrics page cannot be read (%s): %s' % (number, exc, raw[:120]))
        result.samples.append((name, labels, value))
        result.families.add(name)
        result.families.add(_family(name, result.types))
    return result


# -- Selectors -----------------------------------------------------------------------------------------

class Selector(object):
    """metric{label="v",l2!="x",l3=~"re",l4!~"re"}: a name and label matchers."""

    def __init__(self, text):
        self.text = text.strip() if isinstance(text, str) else text
        if not self.text:
            raise MetricsError('metric is empty')
        match = _NAME.match(self.text)
        if not match:
            raise MetricsError("metric '%s' does not start with a metric name" % text)
        self.name = match.group(0)
        self.matchers = []
        position = match.end()
        if position < len(self.text):
            if self.text[position] != '{':
                raise MetricsError("metric '%s': expected '{' after the name" % text)
            try:
                pairs, position = _read_labels(self.text, position, allow_ops=True)
            except MetricsError as exc:
                raise MetricsError("metric '%s': %s; write name{label=\"value\"}" % (text, exc))
            if self.text[position:].strip():
                raise MetricsError("metric '%s': unexpected text after '}'" % text)
            for label, op, value in pairs:
                if op in ('=~', '!~'):
                    try:
                        value = re.compile('^(?:%s)$' % value, re.DOTALL)  # PromQL: . matches newlines
                    except re.error as exc:
                        raise MetricsError("metric '%s': label %s: bad regular expression (%s)" % (text, label, exc))
                self.matchers.append((label, op, value))

    def matches(self, labels, ignore=()):
        for label, op, expected in self.matchers:
            if label in ignore:
                continue
            actual = labels.get(label, '')
            if op == '=' and actual != expected:
                return False
            if op == '!=' and actual == expected:
                return False
            if op == '=~' and not expected.match(actual):
                return False
            if op == '!~' and expected.match(actual):
                return False
        return True

    def values(self, exposition, name=None, ignore=()):
        name = name or self.name
        return [(labels, value) for sample_name, labels, value in exposition.samples
                if sample_name == name and self.matches(labels, ignore)]

    def value(self, exposition, aggregation='sum'):
        """One number from the matching series; Missing when the metric is not on the page."""
        found = [v for dummy, v in self.values(exposition)]
        if not found:
            # A known family whose labelled series has not been created yet counts 0 (no errors so far).
            if aggregation in ('sum', 'count') and exposition.has(self.name):
                return 0.0
            raise Missing('%s: no series' % self.text)
        return aggregate(found, aggregation)

    def buckets(self, exposition):
        """{upper bound: cumulative count} of <name>_bucket series, summed over the other labels."""
        name = self.name[:-len('_bucket')] if self.name.endswith('_bucket') else self.name
        totals = {}
        for labels, value in self.values(exposition, name + '_bucket', ignore=('le',)):
            if 'le' not in labels:
                continue
            bound = parse_float(labels['le'])
            totals[bound] = totals.get(bound, 0.0) + value
        if not totals:
            raise Missing('%s: no %s_bucket series' % (self.text, name))
        return totals


def aggregate(values, aggregation):
    if aggregation == 'count':
        return float(len(values))
    if aggregation == 'sum':
        return float(sum(values))
    if aggregation == 'max':
        return float(max(values))
    if aggregation == 'min':
        return float(min(values))
    if aggregation == 'avg':
        return float(sum(values)) / len(values)
    raise MetricsError('aggregation must be one of %s, not %s' % (', '.join(AGGREGATIONS), aggregation))


def histogram_quantile(q, buckets):
    """PromQL histogram_quantile on {upper bound: cumulative count}; raise Missing when there is no answer."""
    if not 0 <= q <= 1:
        raise MetricsError('quantile must be between 0 and 1, not %s' % q)
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        raise Missing('histogram has no le="+Inf" bucket')
    if len(bounds) < 2:
        raise Missing('histogram has only the +Inf bucket')
    counts = []
    highest = 0.0
    for bound in bounds:  # cumulative counts must not go down (scrapes are not atomic)
        highest = max(highest, buckets[bound])
        counts.append(highest)
    total = counts[-1]
    if total <= 0 or math.isnan(total):
        raise Missing('histogram has no observations')
    rank = q * total
    index = next(i for i, count in enumerate(counts) if count >= rank)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if index == 0 else bounds[index - 1]
    below = 0.0 if index == 0 else counts[index - 1]
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return bounds[index]
    return start + (bounds[index] - start) * (rank - below) / in_bucket


# -- JSON --------------------------------------------------------------------------------------------

def json_value(document, path, aggregation='sum'):
    """The number at a JSON path (numbers, numeric strings, or a list of them aggregated)."""
    try:
        found = smoke.get_path(document, path)
    except smoke.ExpectationError as exc:
        raise MetricsError(str(exc))
    if found is smoke._MISSING:  # pylint: disable=protected-access
        raise Missing('%s is not in the document' % path)
    items = found if isinstance(found, list) else [found]
    numbers = []
    for item in items:
        if isinstance(item, bool) or item is None:
            raise Missing('%s is %s, not a number' % (path, smoke.short(item)))
        if isinstance(item, (int, float)):
            numbers.append(float(item))
            continue
        try:
            numbers.append(parse_float(str(item).strip()))
        except MetricsError:
            raise Missing('%s is %s, not a number' % (path, smoke.short(item)))
    if not numbers:
        raise Missing('%s is an empty list' % path)
    return aggregate(numbers, aggregation) if isinstance(found, list) else numbers[0]


def json_has(document, path):
    try:
        return smoke.get_path(document, path) is not smoke._MISSING  # pylint: disable=protected-access
    except smoke.ExpectationError:
        return False


# -- Thresholds over time -----------------------------------------------------------------------------

def describe(value):
    """A number as people read it: 0.0512, 1200, 3.5."""
    if value is None:
        return '-'
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return '%.4g' % value
    return str(value)


class Threshold(object):
    """One threshold: how to read its value from a page, and whether it has been breached long enough.

    ``observe(t, value)`` takes the time (seconds since the start) and the sample's value (None when the
    sample is missing, which neither starts nor ends a breach).  A breach starts at the first unhealthy
    sample and counts once it has lasted ``for_s`` seconds (0: at once).  ``episodes`` lists the counted
    breaches, the last one ``ongoing`` while it lasts.

    ``severity`` is the runbooks' two kinds of rollback rule (001 "Immediate Rollback If" / "Conditional
    Rollback If"): an ``immediate`` breach recommends a rollback once counted; a ``conditional`` one is a warning
    (monitor, do not roll back) until the breach has lasted ``escalate_after`` seconds from its first unhealthy
    sample, when it ``escalated`` and recommends a rollback too (never, without ``escalate_after``).
    """

    def __init__(self, name, source, metric=None, op='<', limit=0.0, for_s=0.0, aggregation='sum', rate=False,
                 quantile=None, divide_by=None, kind=None, severity='immediate', escalate_after=None):
        if op in OP_ALIASES:
            op = OP_ALIASES[op]
        if op not in OPS:
            raise MetricsError("threshold '%s': op must be one of <, <=, >, >=, max, min, not %r" % (name, op))
        if for_s is None or for_s < 0:
            raise MetricsError("threshold '%s': for must be 0 or more seconds" % name)
        if aggregation not in AGGREGATIONS:
            raise MetricsError("threshold '%s': aggregation must be one of %s" % (name, ', '.join(AGGREGATIONS)))
        if quantile is not None and not 0 <= quantile <= 1:
            raise MetricsError("threshold '%s': quantile must be between 0 and 1, not %s" % (name, quantile))
        if severity not in SEVERITIES:
            raise MetricsError("threshold '%s': severity must be one of %s, not %r" % (name, ', '.join(SEVERITIES), severity))
        if escalate_after is not None:
            if severity != 'conditional':
                raise MetricsError("threshold '%s': escalate_after applies to a conditional threshold only; set "
                                   "severity=conditional, or remove escalate_after" % name)
            if escalate_after < for_s:
                raise MetricsError("threshold '%s': escalate_after (%s s) must not be shorter than for (%s s): a breach "
                                   "is counted before it can escalate" % (name, describe(escalate_after), describe(for_s)))
        self.name = name
        self.source = source
        self.metric = metric
        self.severity = severity
        self.escalate_after = None if escalate_after is None else float(escalate_after)
        self.op = op
        self.limit = float(limit)
        self.for_s = float(for_s)
        self.aggregation = aggregation
        self.rate = rate
        self.quantile = quantile
        self.divide_by = divide_by
        self.kind = kind
        self.selector = self.divisor = None
        self.previous = None  # (t, raw) of the last sample, for rates
        self.breach_start = None
        self.breach_value = None
        self.episodes = []
        self.values = []
        self.missing = 0
        self.last = None
        self.last_missing_reason = None
        if kind:
            self.bind(kind)

    def bind(self, kind):
        """Check the metric for a source format (json or prometheus); an auto source is bound on its first page."""
        self.kind = kind
        if self.metric is None:
            return
        if kind == 'prometheus':
            try:
                self.selector = Selector(self.metric)
                self.divisor = Selector(self.divide_by) if self.divide_by else None
            except MetricsError as exc:
                raise MetricsError("threshold '%s': %s" % (self.name, exc))
        else:
            if self.quantile is not None:
                raise MetricsError("threshold '%s': quantile needs a Prometheus histogram, and source '%s' is %s"
                                   % (self.name, self.source, 'PostgreSQL' if kind == 'postgres' else 'JSON'))
            for path in (self.metric, self.divide_by):
                if path:
                    try:
                        smoke.parse_path(path)
                    except smoke.ExpectationError as exc:
                        raise MetricsError("threshold '%s': %s" % (self.name, exc))

    @property
    def healthy_text(self):
        return '%s %s' % (self.op, describe(self.limit))

    def present(self, page):
        """Whether the metric (and divide_by) exist on the page at all: a wrong name, not a missing sample."""
        if self.kind == 'prometheus':
            names = [self.selector.name] + ([self.divisor.name] if self.divisor else [])
            if self.quantile is not None:
                base = names[0][:-len('_bucket')] if names[0].endswith('_bucket') else names[0]
                names[0] = base
                return page.has(base) or page.has(base + '_bucket')
            return all(page.has(n) for n in names)
        return all(json_has(page, p) for p in (self.metric, self.divide_by) if p)

    def raw(self, page):
        """What is read from one page before rates: a number, (numerator, denominator), or bucket counts."""
        if self.kind == 'prometheus':
            if self.quantile is not None:
                return self.selector.buckets(page)
            top = self.selector.value(page, self.aggregation)
            return (top, self.divisor.value(page, self.aggregation)) if self.divisor else top
        top = json_value(page, self.metric, self.aggregation)
        return (top, json_value(page, self.divide_by, self.aggregation)) if self.divide_by else top

    def compute(self, t, raw):
        """The threshold's value from this page's raw reading (and the previous one for rates)."""
        previous, self.previous = self.previous, (t, raw)
        if self.rate:
            if previous is None:
                raise Missing('first sample of a rate')
            dt = t - previous[0]
            if dt <= 0:
                raise Missing('no time between samples')
            raw = _increase(previous[1], raw)
            if not isinstance(raw, dict):
                raw = _divide_each(raw, dt)
        if self.quantile is not None:
            return histogram_quantile(self.quantile, raw)
        if isinstance(raw, tuple):
            top, bottom = raw
            if bottom == 0:
                if top == 0:
                    raise Missing('0 / 0')
                return float('inf')
            return top / bottom
        return raw

    def read(self, t, page):
        """Value of the threshold on this page at time t, or None (and why, in last_missing_reason)."""
        try:
            return self.compute(t, self.raw(page))
        except Missing as exc:
            self.last_missing_reason = str(exc)
            return None

    def observe(self, t, value, when=None):
        """Record a sample; return the episode when it has just begun to recommend a rollback (an immediate breach
        counted, or a conditional one escalated). A conditional breach that is only counted returns None."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            self.missing += 1
            return None
        self.values.append(value)
        self.last = value
        if OPS[self.op](value, self.limit):
            if self.episodes and self.episodes[-1]['ongoing']:
                self.episodes[-1]['ongoing'] = False
            self.breach_start = None
            return None
        if self.breach_start is None:
            self.breach_start = (t, when)
            self.breach_value = value
        worst = max if self.op in ('<', '<=') else min
        self.breach_value = worst(self.breach_value, value)
        lasted = t - self.breach_start[0]
        if self.episodes and self.episodes[-1]['ongoing']:
            episode = self.episodes[-1]
            episode.update(value=value, worst=self.breach_value, lasted_s=round(lasted, 3))
            return episode if self.escalates(episode, lasted) else None
        if lasted + 1e-6 >= self.for_s:
            episode = dict(threshold=self.name, source=self.source, metric=self.metric, value=value,
                           worst=self.breach_value, limit=self.limit, op=self.op, healthy=self.healthy_text,
                           for_s=self.for_s, since=self.breach_start[1], since_s=round(self.breach_start[0], 3),
                           lasted_s=round(lasted, 3), ongoing=True, severity=self.severity,
                           escalate_after_s=self.escalate_after, escalated=False)
            self.episodes.append(episode)
            if self.severity == 'immediate' or self.escalates(episode, lasted):
                return episode
        return None

    def escalates(self, episode, lasted):
        """Whether a conditional breach has just lasted escalate_after seconds (it then recommends a rollback)."""
        if self.escalate_after is None or episode['escalated'] or lasted + 1e-6 < self.escalate_after:
            return False
        episode['escalated'] = True
        return True

    @staticmethod
    def recommends_rollback(episode):
        return episode['severity'] == 'immediate' or episode['escalated']

    def pending(self, t):
        """Seconds an unconfirmed breach has lasted at t (None when healthy)."""
        if self.breach_start is None or (self.episodes and self.episodes[-1]['ongoing']):
            return None
        return t - self.breach_start[0]

    def stats(self):
        values = self.values
        return dict(source=self.source, metric=self.metric, op=self.op, limit=self.limit, for_s=self.for_s,
                    severity=self.severity, escalate_after_s=self.escalate_after,
                    samples=len(values), missing=self.missing, min=min(values) if values else None,
                    max=max(values) if values else None, last=self.last,
                    # breached: a breach that recommends a rollback; warned: a conditional one that did not escalate
                    breached=any(self.recommends_rollback(e) for e in self.episodes),
                    warned=any(not self.recommends_rollback(e) for e in self.episodes))


def _increase(before, after):
    """Counter increase between two readings; a counter that went down was reset and counts from 0."""
    if isinstance(after, dict):
        result = {}
        for bound, value in after.items():
            old = before.get(bound, 0.0) if isinstance(before, dict) else 0.0
            result[bound] = value - old if value >= old else value
        # a reset of any bucket resets the whole histogram
        if isinstance(before, dict) and after.get(float('inf'), 0.0) < before.get(float('inf'), 0.0):
            return dict(after)
        return result
    if isinstance(after, tuple):
        return tuple(_increase(b, a) for b, a in zip(before, after))
    return after - before if after >= before else after


def _divide_each(value, dt):
    if isinstance(value, tuple):
        return tuple(v / dt for v in value)
    return value / dt
