#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: metrics_watch
short_description: Watch metrics after a deployment and recommend a rollback when thresholds are breached
version_added: 0.1.0
description:
  - Polls one or more metrics sources (Prometheus text format or JSON) and optionally a health URL every
    O(interval) seconds for O(duration) seconds, and compares each reading with its threshold.
  - A threshold is breached when its value stays on the unhealthy side for O(thresholds[].for) seconds
    (the runbooks' "error rate > 5% for 2 minutes -> rollback"). A shorter blip is reported in the statistics
    but is not a breach.
  - Replaces the runbooks' post-deployment monitoring window (C(watch -n 30 curl .../queue-metrics),
    C(curl /metrics | grep error_rate) read by eye, the 30-minute checkpoint targets and the automatic rollback
    triggers) with numbers and a decision, RV(decision), that a playbook's C(rescue) can act on.
  - Uses only the Python standard library on the managed host, except a O(sources[].format=postgres) source, which
    needs psycopg2 there.
options:
  sources:
    description:
      - Where the metrics are read. Every source is read once per round, all at the same time.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the source, unique; thresholds refer to it with O(thresholds[].source).
        type: str
        required: true
      url:
        description:
          - Absolute C(http://) or C(https://) URL of the metrics page. A C(user:password@) part is sent as
            HTTP basic authentication and never returned.
          - For O(sources[].format=postgres), the database's C(postgresql://user:password@host:port/dbname) URL
            (C(sslmode) and C(sslrootcert) query options are read; Prisma's own, such as C(schema), are ignored).
            Its password is never returned.
        type: str
        required: true
      format:
        description:
          - V(prometheus) is the Prometheus text exposition format (C(/metrics)); V(json) a JSON document.
          - V(auto) decides from the first page that answers (a JSON content type, or a body that starts
            with C({) or C([), is JSON).
          - V(postgres) reads the health of a PostgreSQL database (runbook 002's "Database Health") each round,
            through one short connection, as a JSON page whose keys thresholds name as their O(thresholds[].metric)
            C(connections) (client sessions of the whole server, this one excluded), C(max_connections),
            C(connections_used) (the share of C(max_connections), 0 to 1), and for this database
            C(database_connections), C(active), C(idle_in_transaction), C(waiting_on_locks) (sessions),
            C(longest_query_s) (the oldest running query, in seconds), C(longest_idle_in_transaction_s) (the
            oldest open transaction that does nothing, which holds its locks) and C(longest_lock_wait_s) (the
            oldest query waiting on a lock, such as a migration behind a long transaction).
            C(sees_all_sessions) is V(0) when the user sees only its own sessions' states (V(1) otherwise); grant
            it C(pg_monitor) for the others'. Needs psycopg2 on the host the module runs on.
        type: str
        default: auto
        choices: [ auto, json, postgres, prometheus ]
      headers:
        description:
          - Headers sent with every request to this source. Values of headers whose names look secret
            (C(Authorization), C(Cookie), names containing C(token), C(key), C(secret)) are hidden in the results.
        type: dict
        default: {}
      bearer_token:
        description:
          - 'Sent as C(Authorization: Bearer <token>) unless O(sources[].headers) has an C(Authorization) header.'
          - Never appears in the results.
        type: str
  thresholds:
    description:
      - What is compared, and with what. Each reading of a threshold's source gives one sample.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the threshold, unique (V(health) is taken by O(health_url)); used in the results and messages.
        type: str
        required: true
      source:
        description: The O(sources[].name) the metric is read from. Defaults to the first source.
        type: str
      metric:
        description:
          - For a JSON source, a path into the document, V(errors.rate) or V(queues[0].size) (keys joined with
            dots, list indexes in brackets, V(["a.b"]) for a key with a dot). A list of numbers is aggregated
            with O(thresholds[].aggregation).
          - For a Prometheus source, a metric name with optional label matchers,
            V(http_requests_total{status=~"5..",method!="OPTIONS"}) (C(=), C(!=), C(=~), C(!~) as in PromQL). The
            matching series are aggregated with O(thresholds[].aggregation). With O(thresholds[].quantile), the
            name of a histogram (its C(_bucket) series are read).
        type: str
        required: true
      op:
        description:
          - The B(healthy) condition, value C(op) limit, V(<) for "error rate below 5%". V(max) is V(<=) (the
            value may rise to the limit), V(min) is V(>=).
        type: str
        default: '<'
        choices: [ '<', '<=', '>', '>=', max, min ]
      value:
        description: The limit.
        type: float
        required: true
      for:
        description:
          - Seconds the value must stay unhealthy before the breach counts. V(0) counts the first unhealthy sample.
          - Missing samples (an unreachable source) neither start nor end a breach.
        type: float
        default: 0
      aggregation:
        description:
          - How several values become one (Prometheus series matching the selector, or a JSON list).
          - A Prometheus metric that is declared on the page (C(# TYPE)) or has other series, but no series
            matching the labels yet, counts V(0) with V(sum) and V(count) (no 5xx response so far), and is a
            missing sample otherwise.
        type: str
        default: sum
        choices: [ sum, max, min, avg, count ]
      rate:
        description:
          - Compare the per-second increase between two samples instead of the value, for counters such as
            C(http_requests_total). A counter that goes down was reset (a restart) and counts from zero.
          - The first sample of a rate is missing (there is nothing to compare it with).
          - With O(thresholds[].quantile), the quantile of the observations made between the two samples
            (PromQL C(histogram_quantile(q, rate(x_bucket[...])))).
        type: bool
        default: false
      divide_by:
        description:
          - A second metric (same syntax as O(thresholds[].metric), same source and aggregation) the value is
            divided by, for ratios such as errors per request. With O(thresholds[].rate), both are rates.
          - C(0/0) is a missing sample; C(x/0) is infinite.
        type: str
      quantile:
        description:
          - Read O(thresholds[].metric) as a Prometheus histogram and compare its quantile, V(0.95) for the p95
            latency, interpolated in the buckets as PromQL C(histogram_quantile) does (series summed by C(le)).
        type: float
      severity:
        description:
          - The runbooks' two kinds of rollback rule (runbook 001, "Immediate Rollback If" and "Conditional Rollback If").
          - V(immediate), a counted breach recommends a rollback (RV(decision=rollback)) and, with O(stop_on_breach),
            ends the watch.
          - V(conditional), a counted breach is a warning, not a rollback. The watch goes on, the breach is listed in
            RV(conditional_breaches), and the decision is V(monitor) (the release is kept and someone should look).
            It becomes a rollback breach when it lasts O(thresholds[].escalate_after) seconds.
        type: str
        default: immediate
        choices: [ immediate, conditional ]
      escalate_after:
        description:
          - For a V(conditional) threshold, the seconds a breach may last, from its first unhealthy sample, before it
            recommends a rollback after all (001 "queue size > 1000 and growing", "error rate 1-5% after 1 hour").
            Not shorter than O(thresholds[].for).
          - Without it, a conditional breach never recommends a rollback (runbook 001 leaves that decision to a person).
          - A breach escalates only within the watch. Longer than O(duration), it can only warn, and the module says so.
        type: float
  health_url:
    description:
      - URL that must answer with a 2xx status. A failure (another status, no answer) is a breach of the
        built-in threshold V(health) once it has lasted O(health_fail_for) seconds.
    type: str
  health_fail_for:
    description: Seconds the health URL may fail before its breach counts (the runbooks' "health failing > 2 min").
    type: float
    default: 0
  duration:
    description:
      - Seconds to watch. The last round starts no later than this. V(0) reads every source once.
      - At most 604800 (7 days), as for every number of seconds of this module; NaN and infinity are refused.
    type: float
    default: 300
  interval:
    description: Seconds between the starts of two rounds.
    type: float
    default: 10
  timeout:
    description: Seconds to wait for each response.
    type: float
    default: 5
  progress_file:
    description:
      - A file the module rewrites (atomically, mode 0600) after every round with where the watch stands, for a
        caller that prints heartbeats while it runs (the watch role runs the module with C(async) and reads it).
      - It is a JSON object with C(elapsed_s), C(duration_s), C(samples), C(breaches) (those that recommend a
        rollback), C(conditional) (the conditional breaches that did not escalate) and C(last) (each threshold's
        last value), numbers and threshold names only. The module removes it when it ends, so that its absence
        tells that the watch is over.
    type: path
  stop_on_breach:
    description: Stop watching at the first breach. V(false) watches the whole O(duration) and reports every breach.
    type: bool
    default: true
  fail_on_breach:
    description:
      - Fail the task when a threshold is breached. V(false) returns RV(passed=false) and RV(decision=rollback)
        without failing.
    type: bool
    default: true
  missing_metrics:
    description:
      - What to do when a threshold's metric (or O(thresholds[].divide_by)) is not on the first page its
        source returns, usually a wrong name. V(fail) stops at once; V(warn) warns and counts missing samples.
    type: str
    default: fail
    choices: [ fail, warn ]
  on_inconclusive:
    description:
      - What to do when a threshold got no sample in the whole window (its source was refused, timed out,
        answered another status than 2xx or a page that cannot be parsed on every read, or its metric never
        appeared), so the watch cannot say the release is healthy.
      - V(fail) (the default) makes RV(decision=inconclusive) and fails the task, whatever O(fail_on_breach)
        says (it is not a breach); the message says why for each threshold (refused, HTTP 500, unparseable,
        how many reads failed).
      - V(keep) accepts a window without data, RV(decision=keep), with a warning that says why.
      - A breach of another threshold wins, the decision is then V(rollback).
    type: str
    default: fail
    choices: [ fail, keep ]
  validate_certs:
    description: Verify TLS certificates of C(https://) URLs. Set V(false) only for test hosts.
    type: bool
    default: true
  ca_path:
    description: PEM file of the certificate authorities to trust instead of the system ones.
    type: path
attributes:
  check_mode:
    support: full
    description: Reads the sources as in a normal run (it only reads), so check mode watches for real.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to show.
notes:
  - The module never reports a change.
  - An unreachable source, a non-2xx answer or a page that cannot be parsed is a missing sample for that
    source's thresholds, counted in RV(sources) and RV(thresholds); for O(health_url) it is a failing sample.
    A threshold left with no sample at all makes the watch inconclusive (see O(on_inconclusive)).
  - Header values (O(sources[].headers), O(sources[].bearer_token)) must be one line of Latin-1 text, without
    control characters; header names are RFC 9110 tokens. Other values fail before any request, naming the option.
  - The failure message names each breached threshold, its value, the healthy condition and how long the breach
    lasted, and ends with "rollback recommended". The numbers are also in the failed result.
requirements:
  - psycopg2, only for a O(sources[].format=postgres) source, on the host the module runs on.
seealso:
  - module: runbook.deploy.smoke_test
    description: Gate a release on health checks before it takes traffic; this module watches it afterwards.
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Watch the release for 5 minutes, roll back on the runbook's triggers
  runbook.deploy.metrics_watch:
    duration: 300
    interval: 10
    sources:
      - name: api
        url: http://127.0.0.1:3000/api/admin/observability/metrics/prometheus
        bearer_token: "{{ vault_admin_key }}"
      - name: queue
        url: https://api.example.com/api/pems/queue-metrics
        format: json
        bearer_token: "{{ vault_api_token }}"
    thresholds:
      - name: error_rate            # error rate > 5% for 2 min -> rollback
        source: api
        metric: http_requests_total{status=~"5.."}
        divide_by: http_requests_total
        rate: true
        op: '<'
        value: 0.05
        for: 120
      - name: p95_latency           # response time P95 < 2000 ms
        source: api
        metric: http_request_duration_ms
        quantile: 0.95
        rate: true
        op: '<'
        value: 2000
        for: 300
      - name: queue_size
        source: queue
        metric: queue.size
        op: max
        value: 1000
    health_url: https://api.example.com/health
    health_fail_for: 120            # health failing > 2 min -> rollback
  register: watch

- name: Watch without failing, decide later
  runbook.deploy.metrics_watch:
    duration: 60
    interval: 5
    fail_on_breach: false
    sources:
      - name: app
        url: http://127.0.0.1:3000/metrics.json
    thresholds:
      - name: error_rate
        metric: errors.rate
        value: 0.05
  register: watch

- name: Roll back when the watch says so
  ansible.builtin.include_role:
    name: runbook.deploy.backend
    tasks_from: rollback
  when: watch.decision == 'rollback'
'''

RETURN = r'''
passed:
  description: Whether no threshold recommends a rollback (RV(decision) is V(keep) or V(monitor)).
  returned: always
  type: bool
  sample: false
decision:
  description: V(rollback) when a threshold was breached (an immediate one, or a conditional one past its
    O(thresholds[].escalate_after)), V(keep) when none was, V(monitor) when only conditional thresholds were
    (RV(conditional_breaches); the release is kept, RV(passed=true), with a warning), V(inconclusive) when a threshold
    got no sample at all and O(on_inconclusive=fail), V(unknown) when the watch could not run (bad options, a metric
    missing from its source).
  returned: always
  type: str
  sample: rollback
breaches:
  description: Every counted breach that recommends a rollback (immediate thresholds, and conditional ones that
    escalated), in the order they were counted.
  returned: always
  type: list
  elements: dict
  contains:
    threshold:
      description: The threshold's name.
      type: str
      sample: error_rate
    source:
      description: The source's name (V(health_url) for the health threshold).
      type: str
      sample: api
    metric:
      description: The metric compared (null for the health threshold).
      type: str
      sample: errors.rate
    value:
      description: The last value seen during the breach (for V(health), V(0) = failing).
      type: float
      sample: 0.12
    worst:
      description: The value furthest from healthy during the breach.
      type: float
      sample: 0.18
    limit:
      description: The threshold's limit.
      type: float
      sample: 0.05
    op:
      description: The healthy condition's operator (V(max) and V(min) as V(<=) and V(>=)).
      type: str
      sample: '<'
    healthy:
      description: The healthy condition as text.
      type: str
      sample: < 0.05
    for_s:
      description: Seconds the breach had to last to count.
      type: float
      sample: 120
    since:
      description: When the first unhealthy sample of the breach was taken (UTC, ISO 8601).
      type: str
      sample: '2025-01-31T10:15:02Z'
    since_s:
      description: Seconds after the start of the watch.
      type: float
      sample: 40.0
    lasted_s:
      description: Seconds from the first to the last unhealthy sample of the breach.
      type: float
      sample: 121.3
    ongoing:
      description: Whether the value was still unhealthy at the last sample.
      type: bool
      sample: true
    severity:
      description: The threshold's O(thresholds[].severity).
      type: str
      sample: immediate
    escalate_after_s:
      description: The threshold's O(thresholds[].escalate_after) (null when not set).
      type: float
      sample: null
    escalated:
      description: Whether a conditional breach lasted its O(thresholds[].escalate_after) (always false for an immediate one).
      type: bool
      sample: false
conditional_breaches:
  description:
    - The counted breaches of V(conditional) thresholds that did not escalate, with the same keys as RV(breaches).
      They make RV(decision=monitor) (when nothing recommends a rollback) and a warning, never a failure.
  returned: always
  type: list
  elements: dict
  sample:
    - {threshold: queue_size, source: queue, metric: queue.size, value: 1450, worst: 1480, limit: 1000, op: '<',
       healthy: '< 1000', for_s: 120, since: '2025-01-31T10:15:02Z', since_s: 40.0, lasted_s: 180.0, ongoing: true,
       severity: conditional, escalate_after_s: 3600, escalated: false}
inconclusive:
  description: The thresholds that got no sample in the whole window, and why (empty when every threshold got one).
  returned: always
  type: list
  elements: dict
  contains:
    threshold:
      description: The threshold's name.
      type: str
      sample: error_rate
    source:
      description: The source's name.
      type: str
      sample: api
    reads:
      description: Reads of the source.
      type: int
      sample: 31
    failed_reads:
      description: Reads of the source that gave no page.
      type: int
      sample: 31
    errors:
      description: Failed reads by kind (V(refused), V(timeout), V(TLS), V(DNS), V(connection), V(HTTP 500), V(unparseable)).
      type: dict
      sample: {refused: 31}
    reason:
      description: Why, in words.
      type: str
      sample: '31 of 31 read(s) failed (refused: 31), last: connection to http://127.0.0.1:3000/metrics refused
        (is the service listening?)'
samples:
  description: Rounds of reads made (one sample per source and threshold each).
  returned: always
  type: int
  sample: 31
thresholds:
  description: Per threshold (by name, V(health) included when O(health_url) is set), what was seen.
  returned: always
  type: dict
  sample:
    error_rate: {source: api, metric: errors.rate, op: '<', limit: 0.05, for_s: 120, severity: immediate,
                 escalate_after_s: null, samples: 30, missing: 1, min: 0.001, max: 0.18, last: 0.12, breached: true,
                 warned: false}
sources:
  description: Per source (by name), its URL without credentials, the format read, how many reads answered, and
    the failed reads by kind (C(error_kinds), as in RV(inconclusive[].errors)).
  returned: always
  type: dict
  sample:
    api: {url: 'http://127.0.0.1:3000/metrics', format: prometheus, reads: 31, errors: 1, error_kinds: {timeout: 1},
          last_error: 'connection to http://127.0.0.1:3000/metrics refused (is the service listening?)'}
duration_s:
  description: Seconds the watch took.
  returned: always
  type: float
  sample: 300.4
'''

import concurrent.futures
import json
import math
import re
import time
import traceback

from urllib.parse import unquote

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.runbook.deploy.plugins.module_utils import http_client as http
from ansible_collections.runbook.deploy.plugins.module_utils import metrics
from ansible_collections.runbook.deploy.plugins.module_utils import postgres
from ansible_collections.runbook.deploy.plugins.module_utils import progress

HEALTH = 'health'


class WatchError(Exception):
    """The watch cannot run as asked; the message is ready for fail_json."""


class Source(object):
    def __init__(self, spec, timeout):
        self.name = spec['name']
        self.url = spec['url']
        self.format = spec['format']
        self.kind = None if self.format == 'auto' else self.format
        self.timeout = timeout
        self.reads = 0
        self.errors = 0
        self.error_kinds = {}  # why reads failed: refused, timeout, HTTP 500, unparseable, ...
        self.last_error = None
        self.answered = False
        if self.format == 'postgres':
            self.init_postgres(spec)
            return
        try:
            self.headers = http.check_headers(spec['headers'], "source '%s': headers" % self.name)
            if spec['bearer_token'] and not any(k.lower() == 'authorization' for k in self.headers):
                self.headers['Authorization'] = http.check_header_value(
                    'Authorization', 'Bearer %s' % spec['bearer_token'], "source '%s': bearer_token" % self.name)
        except http.OptionError as exc:
            raise WatchError(to_native(exc))
        if not re.match(r'^https?://[^/]', self.url or '', re.I):
            raise WatchError("source '%s': url '%s' must be an absolute http:// or https:// URL"
                             % (self.name, http.strip_credentials(self.url)))
        http.check_url(self.url, "source '%s': url" % self.name)  # a port out of range, a bad IPv6 address

    def init_postgres(self, spec):
        where = "source '%s'" % self.name
        if spec['headers'] or spec['bearer_token']:
            raise WatchError('%s: headers and bearer_token are for HTTP sources; a postgres source logs in with the '
                             'user and password of its url' % where)
        if not postgres.HAS_PSYCOPG2:
            raise WatchError('%s (format postgres) needs the psycopg2 Python package on this host; install it '
                             '(python3-psycopg2), or run the watch from a host that has it' % where)
        try:
            self.conn = postgres.parse_db_url(self.url or '')
        except postgres.PostgresError as exc:
            raise WatchError('%s: url: %s' % (where, to_native(exc).replace('db_url ', '')))
        if not self.conn.get('dbname'):
            raise WatchError('%s: url names no database; expected postgresql://user:password@host:port/dbname' % where)
        self.conn.setdefault('port', 5432)
        self.conn.setdefault('user', 'postgres')
        # libpq takes whole seconds (at least 2: 1 means 2 to libpq anyway).
        self.conn['connect_timeout'] = max(2, int(math.ceil(self.timeout)))

    def fetch_postgres(self):
        try:
            connection = postgres.connect(self.conn, autocommit=False)
        except postgres.PostgresError as exc:
            text = to_native(exc)
            kind = 'refused' if 'refused' in text else 'timeout' if 'timeout expired' in text else 'connection'
            return None, text, kind
        try:
            cursor = connection.cursor()
            # A watch must not wait behind the locks it reports. SET LOCAL, in the reading's own transaction: behind
            # a transaction-pooling pgbouncer a plain SET would stay on a server connection the app then uses.
            cursor.execute('SET LOCAL statement_timeout = %s', (int(self.timeout * 1000),))
            cursor.close()
            return ('postgres', postgres.health(connection)), None, None
        except postgres.psycopg2.Error as exc:
            return None, 'the health query on %s failed: %s' % (postgres.describe(self.conn), to_native(exc).strip()), 'query'
        finally:
            # The reading changed nothing; a broken connection is closed all the same.
            try:
                connection.rollback()
            except postgres.psycopg2.Error:
                pass
            connection.close()

    def fetch(self, context):
        """(page, error, why): page is a parsed Exposition or JSON document, error a message, why its kind."""
        if self.format == 'postgres':
            return self.fetch_postgres()
        try:
            response = http.request('GET', self.url, headers=self.headers, timeout=self.timeout, context=context)
        except http.HttpError as exc:
            return None, to_native(exc), exc.kind or 'connection'
        if not 200 <= response.status < 300:
            return None, 'HTTP %d from %s' % (response.status, http.strip_credentials(self.url)), 'HTTP %d' % response.status
        kind = self.kind or self.detect(response)
        try:
            if kind == 'json':
                page = json.loads(response.text)
            else:
                page = metrics.parse_prometheus(response.text)
        except ValueError as exc:
            return None, 'the page of %s is not JSON: %s' % (http.strip_credentials(self.url), exc), 'unparseable'
        except metrics.MetricsError as exc:
            return None, '%s: %s' % (http.strip_credentials(self.url), exc), 'unparseable'
        return (kind, page), None, None

    @staticmethod
    def detect(response):
        if 'json' in response.headers.get('content-type', '').lower():
            return 'json'
        return 'json' if response.text.lstrip()[:1] in ('{', '[') else 'prometheus'

    def stats(self):
        return dict(url=http.strip_credentials(self.url), format=self.kind or self.format, reads=self.reads,
                    errors=self.errors, error_kinds=dict(self.error_kinds), last_error=self.last_error)


class HealthSource(object):
    name = 'health_url'

    def __init__(self, url, timeout):
        self.url = url
        self.timeout = timeout
        self.reads = 0
        self.errors = 0
        self.error_kinds = {}
        self.last_error = None
        if not re.match(r'^https?://[^/]', url or '', re.I):
            raise WatchError("health_url '%s' must be an absolute http:// or https:// URL" % http.strip_credentials(url))
        http.check_url(url, 'health_url')

    def fetch(self, context):
        try:
            response = http.request('GET', self.url, timeout=self.timeout, context=context)
        except http.HttpError as exc:
            return ('health', 0.0), to_native(exc), exc.kind or 'connection'
        if 200 <= response.status < 300:
            return ('health', 1.0), None, None
        return ('health', 0.0), 'HTTP %d from %s' % (response.status, http.strip_credentials(self.url)), \
            'HTTP %d' % response.status

    def stats(self):
        return dict(url=http.strip_credentials(self.url), format='health', reads=self.reads, errors=self.errors,
                    error_kinds=dict(self.error_kinds), last_error=self.last_error)


def utc_now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


class MetricsWatch(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.sources = []
        self.thresholds = []
        self.health = None
        self.rounds = 0
        self.elapsed = 0.0
        self.context = None
        self.warnings = []
        self.redact = http.Redactor()
        for spec in self.params['sources'] or []:
            self.redact.add_headers(spec.get('headers'))
            if spec.get('bearer_token'):
                self.redact.add(spec['bearer_token'])
            self.add_url_password(spec.get('url'))
        self.add_url_password(self.params['health_url'])

    def add_url_password(self, url):
        match = re.match(r'^[a-z]+://([^/@]*)@', url or '', re.I)
        if match and ':' in match.group(1):
            password = match.group(1).split(':', 1)[1]
            self.redact.add(password)
            self.redact.add(unquote(password))

    def safe_params(self):
        params = dict(self.params)
        params['sources'] = [dict(s, headers=http.redact_headers(s.get('headers')), url=http.strip_credentials(s.get('url')),
                                  bearer_token='VALUE_SPECIFIED_IN_NO_LOG_PARAMETER' if s.get('bearer_token') else None)
                             if isinstance(s, dict) else s for s in params['sources'] or []]
        if params['health_url']:
            params['health_url'] = http.strip_credentials(params['health_url'])
        return self.redact(params)

    def validate(self):
        p = self.params
        # NaN and infinity pass a plain comparison and then loop forever or overflow time.sleep() and socket
        # timeouts: every number of seconds is checked for a finite range
        http.check_seconds(p['duration'], 'duration')
        http.check_seconds(p['interval'], 'interval', allow_minimum=False)
        http.check_seconds(p['timeout'], 'timeout', allow_minimum=False)
        http.check_seconds(p['health_fail_for'], 'health_fail_for')
        if not p['sources'] and not p['health_url']:
            raise WatchError('nothing to watch: give sources (with thresholds) or a health_url')
        if p['sources'] and not p['thresholds']:
            raise WatchError('sources are given but no thresholds: add thresholds that compare their metrics')
        by_name = {}
        for spec in p['sources']:
            if spec['name'] in by_name:
                raise WatchError("two sources are named '%s'; source names must be unique" % spec['name'])
            by_name[spec['name']] = Source(spec, p['timeout'])
            self.sources.append(by_name[spec['name']])
        seen = set()
        for spec in p['thresholds']:
            name = spec['name']
            if name == HEALTH:
                raise WatchError("threshold name 'health' is reserved for health_url; rename the threshold")
            if name in seen:
                raise WatchError("two thresholds are named '%s'; threshold names must be unique" % name)
            seen.add(name)
            source_name = spec['source'] or (self.sources[0].name if self.sources else None)
            if source_name not in by_name:
                raise WatchError("threshold '%s': source '%s' is not in sources (%s)"
                                 % (name, source_name, ', '.join(sorted(by_name)) or 'none given'))
            source = by_name[source_name]
            http.check_seconds(spec['for'], "threshold '%s': for" % name)
            if spec['escalate_after'] is not None:
                http.check_seconds(spec['escalate_after'], "threshold '%s': escalate_after" % name)
                if spec['escalate_after'] > p['duration']:
                    # The same thresholds serve windows of different lengths (a deployment's, a rollback's, a later
                    # checkpoint's): in a shorter one the breach can only warn, and the result says so.
                    self.warnings.append("threshold '%s': escalate_after (%s s) is longer than this watch (%s s): a "
                                         "breach can only warn in it" % (name, metrics.describe(spec['escalate_after']),
                                                                         metrics.describe(p['duration'])))
            if math.isnan(spec['value']):
                raise WatchError("threshold '%s': value must be a number, not NaN" % name)
            try:
                self.thresholds.append(metrics.Threshold(
                    name, source_name, metric=spec['metric'], op=spec['op'], limit=spec['value'], for_s=spec['for'],
                    aggregation=spec['aggregation'], rate=spec['rate'], quantile=spec['quantile'],
                    divide_by=spec['divide_by'], kind=source.kind, severity=spec['severity'],
                    escalate_after=spec['escalate_after']))
            except metrics.MetricsError as exc:
                raise WatchError(to_native(exc))
        if p['health_url']:
            self.health = HealthSource(p['health_url'], p['timeout'])
            self.thresholds.append(metrics.Threshold(HEALTH, HealthSource.name, op='>=', limit=1,
                                                     for_s=p['health_fail_for']))
        needs_tls = any(s.url.lower().startswith('https://') for s in self.all_sources())
        if needs_tls:
            self.context = http.ssl_context(p['validate_certs'], p['ca_path'])
        elif p['ca_path']:
            http.ssl_context(True, p['ca_path'])  # still report a wrong path

    def all_sources(self):
        return self.sources + ([self.health] if self.health else [])

    def read_round(self, pool):
        sources = self.all_sources()
        futures = [pool.submit(source.fetch, self.context) for source in sources]
        pages = {}
        for source, future in zip(sources, futures):
            page, error, why = future.result()
            source.reads += 1
            if error:
                source.errors += 1
                source.error_kinds[why] = source.error_kinds.get(why, 0) + 1
                source.last_error = error
            if page is not None:
                pages[source.name] = page
        return pages

    def first_page(self, source, kind, page):
        """Bind an auto source to its format and look for every metric once."""
        source.answered = True
        if source.kind is None:
            source.kind = kind
        for threshold in self.thresholds:
            if threshold.source != source.name:
                continue
            try:
                threshold.bind(kind)
            except metrics.MetricsError as exc:
                raise WatchError(to_native(exc))
            if threshold.present(page):
                continue
            what = ' or '.join(repr(m) for m in (threshold.metric, threshold.divide_by) if m)
            message = ("threshold '%s': %s is not on the %s page of source '%s' (%s)"
                       % (threshold.name, what, kind, source.name, http.strip_credentials(source.url)))
            if self.params['missing_metrics'] == 'fail':
                raise WatchError(message + "; check the metric's name, or set missing_metrics=warn if it appears later")
            self.warnings.append(message)

    def run(self):
        p = self.params
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.all_sources()))) as pool:
            while True:
                # on schedule, samples are dated at their scheduled start: `for` is counted in whole intervals,
                # not lost to a millisecond of jitter
                scheduled = self.rounds * p['interval']
                t = time.monotonic() - started
                if t - scheduled < 0.05:
                    t = scheduled
                when = utc_now()
                pages = self.read_round(pool)
                self.rounds += 1
                for source in self.sources:
                    if source.name in pages and not source.answered:
                        self.first_page(source, *pages[source.name])
                breached = False
                for threshold in self.thresholds:
                    page = pages.get(threshold.source)
                    if page is None:
                        value = None
                    elif threshold.name == HEALTH:
                        value = page[1]
                    else:
                        value = threshold.read(t, page[1])
                    if threshold.observe(t, value, when):
                        breached = True
                self.write_progress(time.monotonic() - started)
                if breached and p['stop_on_breach']:
                    break
                next_start = self.rounds * p['interval']
                if next_start > p['duration'] + 1e-9:
                    break
                pause = started + next_start - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        self.elapsed = round(time.monotonic() - started, 3)
        for source in self.sources:
            if not source.answered:
                self.warnings.append("source '%s' (%s) never answered in %d read(s): %s"
                                     % (source.name, http.strip_credentials(source.url), source.reads, source.last_error))

    def write_progress(self, elapsed):
        if self.params['progress_file']:
            progress.write(self.params['progress_file'], dict(
                elapsed_s=round(elapsed, 1), duration_s=self.params['duration'], samples=self.rounds,
                breaches=len(self.breaches()), conditional=len(self.conditional_breaches()),
                last=dict((t.name, t.last) for t in self.thresholds)))

    def remove_progress(self):
        if self.params['progress_file']:
            progress.remove(self.params['progress_file'])

    def breaches(self):
        """The counted breaches that recommend a rollback, in the order they began to."""
        episodes = [e for t in self.thresholds for e in t.episodes if t.recommends_rollback(e)]
        return sorted(episodes, key=lambda e: e['since_s'] + (e['escalate_after_s'] if e['escalated'] else e['for_s']))

    def conditional_breaches(self):
        """The counted breaches of conditional thresholds that did not escalate: monitor, do not roll back."""
        episodes = [e for t in self.thresholds for e in t.episodes if not t.recommends_rollback(e)]
        return sorted(episodes, key=lambda e: e['since_s'] + e['for_s'])

    def inconclusive(self):
        """Thresholds that got no sample in the whole window, and why: the watch cannot call them healthy."""
        by_name = dict((s.name, s) for s in self.sources)
        found = []
        for threshold in self.thresholds:
            if threshold.name == HEALTH or threshold.values or not self.rounds:
                continue
            source = by_name[threshold.source]
            kinds = ', '.join('%s: %d' % kv for kv in sorted(source.error_kinds.items()))
            if source.errors:
                reason = '%d of %d read(s) failed (%s), last: %s' % (source.errors, source.reads, kinds, source.last_error)
            else:
                reason = 'no usable value in %d read(s): %s' % (source.reads, threshold.last_missing_reason or 'missing')
            found.append(dict(threshold=threshold.name, source=source.name, reads=source.reads,
                              failed_reads=source.errors, errors=dict(source.error_kinds), reason=reason))
        return found

    def result(self):
        breaches = self.breaches()
        conditional = self.conditional_breaches()
        inconclusive = self.inconclusive()
        if breaches:
            decision = 'rollback'
        elif inconclusive and self.params['on_inconclusive'] == 'fail':
            decision = 'inconclusive'
        elif conditional:
            decision = 'monitor'
        else:
            decision = 'keep'
        return dict(passed=decision in ('keep', 'monitor'), decision=decision, breaches=breaches,
                    conditional_breaches=conditional, inconclusive=inconclusive,
                    samples=self.rounds, duration_s=self.elapsed,
                    thresholds=dict((t.name, t.stats()) for t in self.thresholds),
                    sources=dict((s.name, s.stats()) for s in self.all_sources()))

    def inconclusive_message(self, inconclusive):
        parts = ["threshold '%s' got no sample from source '%s' (%s): %s"
                 % (i['threshold'], i['source'], http.strip_credentials(self.source_url(i['source'])), i['reason'])
                 for i in inconclusive]
        return self.redact('metrics watch inconclusive after %d read(s) in %.1f s: %s -- without samples the watch cannot '
                           'say the release is healthy; fix the source, or set on_inconclusive=keep (watch_on_inconclusive in the watch role) to accept a '
                           'window without data' % (self.rounds, self.elapsed, '; '.join(parts)))

    def monitor_message(self, conditional):
        limits = ['%s: %s' % (b['threshold'], ('rollback after %s s' % metrics.describe(b['escalate_after_s']))
                              if b['escalate_after_s'] is not None else 'never rolls back')
                  for b in conditional]
        return self.redact('metrics watch saw %d conditional breach(es) after %d sample(s) in %.1f s: %s -- monitor: no '
                           'rollback (%s)' % (len(conditional), self.rounds, self.elapsed,
                                              '; '.join(self.describe_breaches(conditional)), ', '.join(limits)))

    def source_url(self, name):
        return [s.url for s in self.sources if s.name == name][0]

    def describe_breaches(self, breaches):
        parts = []
        for b in breaches:
            if b['threshold'] == HEALTH:
                parts.append('health: %s failing for %.1f s since %s (allowed: %s s; last error: %s)'
                             % (http.strip_credentials(self.params['health_url']), b['lasted_s'], b['since'],
                                metrics.describe(b['for_s']), self.health.last_error))
                continue
            parts.append("%s: %s = %s (worst %s), healthy is %s, unhealthy for %.1f s since %s (for: %s s%s) on source '%s'"
                         % (b['threshold'], b['metric'], metrics.describe(b['value']), metrics.describe(b['worst']),
                            b['healthy'], b['lasted_s'], b['since'], metrics.describe(b['for_s']),
                            ', conditional, escalated after %s s' % metrics.describe(b['escalate_after_s'])
                            if b['escalated'] else '', b['source']))
        return parts

    def failure_message(self, breaches):
        parts = self.describe_breaches(breaches)
        return self.redact('metrics watch breached %d threshold(s) after %d sample(s) in %.1f s: %s -- rollback recommended'
                           % (len(breaches), self.rounds, self.elapsed, '; '.join(parts)))


def main():
    argument_spec = dict(
        sources=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str', required=True),
            url=dict(type='str', required=True),
            format=dict(type='str', default='auto', choices=['auto', 'json', 'postgres', 'prometheus']),
            headers=dict(type='dict', default={}),
            bearer_token=dict(type='str', no_log=True),
        )),
        thresholds=dict(type='list', elements='dict', default=[], options={
            'name': dict(type='str', required=True),
            'source': dict(type='str'),
            'metric': dict(type='str', required=True),
            'op': dict(type='str', default='<', choices=['<', '<=', '>', '>=', 'max', 'min']),
            'value': dict(type='float', required=True),
            'for': dict(type='float', default=0),
            'aggregation': dict(type='str', default='sum', choices=list(metrics.AGGREGATIONS)),
            'rate': dict(type='bool', default=False),
            'divide_by': dict(type='str'),
            'quantile': dict(type='float'),
            'severity': dict(type='str', default='immediate', choices=list(metrics.SEVERITIES)),
            'escalate_after': dict(type='float'),
        }),
        health_url=dict(type='str'),
        health_fail_for=dict(type='float', default=0),
        duration=dict(type='float', default=300),
        interval=dict(type='float', default=10),
        timeout=dict(type='float', default=5),
        progress_file=dict(type='path'),
        stop_on_breach=dict(type='bool', default=True),
        fail_on_breach=dict(type='bool', default=True),
        missing_metrics=dict(type='str', default='fail', choices=['fail', 'warn']),
        on_inconclusive=dict(type='str', default='fail', choices=['fail', 'keep']),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    job = MetricsWatch(module)
    result = dict(changed=False, passed=False, decision='unknown', breaches=[], conditional_breaches=[], inconclusive=[],
                  samples=0, thresholds={},
                  sources={}, duration_s=0.0)
    # AnsibleModule would echo source headers as given (API keys in X-Api-Key and the like).
    result['invocation'] = dict(module_args=job.safe_params())
    try:
        job.validate()
        try:
            job.run()
        finally:
            job.remove_progress()
        result.update(job.result())
        result = job.redact(result)
        if result['inconclusive'] and result['decision'] in ('keep', 'monitor'):
            job.warnings.append(job.inconclusive_message(result['inconclusive']).replace(
                'set on_inconclusive=keep to accept', 'on_inconclusive=keep accepts'))
        for warning in job.warnings:
            module.warn(job.redact(warning))
    except (WatchError, http.HttpError) as exc:
        result.update(job.result() if job.rounds else {}, passed=False, decision='unknown')
        module.fail_json(msg=job.redact(to_native(exc)), **job.redact(result))
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg=job.redact('metrics_watch failed unexpectedly: %s' % to_native(exc)),
                         exception=job.redact(traceback.format_exc()), **job.redact(result))
    if result['breaches']:
        message = job.failure_message(result['breaches'])
        if module.params['fail_on_breach']:
            module.fail_json(msg=message, **result)
        result['msg'] = message
    elif result['decision'] == 'monitor':
        # a warning, not a failure: the release is kept and the caller (the watch role) notifies
        result['msg'] = job.monitor_message(result['conditional_breaches'])
        module.warn(result['msg'])
    elif result['decision'] == 'inconclusive':
        # not a breach, so fail_on_breach does not apply: no data is a failed gate unless on_inconclusive=keep
        module.fail_json(msg=job.inconclusive_message(result['inconclusive']), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
