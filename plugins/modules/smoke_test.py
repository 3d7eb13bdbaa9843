#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: smoke_test
short_description: Gate a release on HTTP and WebSocket checks, polled until they pass
version_added: 0.1.0
description:
  - Runs a list of HTTP checks (status, JSON subset, JSON paths, regular expression, latency) and WebSocket
    checks (handshake, optionally a message round trip) against a service, concurrently, and fails with a
    table of the checks that did not pass.
  - Replaces the runbooks' C(sleep 30) followed by C(curl) lines read by eye. With O(wait_timeout) the checks
    are polled every O(interval) seconds until each has passed O(consecutive) times in a row, or the deadline
    passes.
  - Uses only the Python standard library on the managed host.
options:
  base_url:
    description:
      - URL that each check's O(checks[].path) is appended to, V(https://api.example.com).
      - A C(user:password@) part is sent as HTTP basic authentication and never returned.
    type: str
  headers:
    description:
      - Headers sent with every check (a check's own O(checks[].headers) win).
      - Values of headers whose names look secret (C(Authorization), C(Cookie), names containing C(token),
        C(secret), C(key), C(password), C(session)) are replaced by C(********) in the results.
    type: dict
    default: {}
  bearer_token:
    description:
      - 'Sent as C(Authorization: Bearer <token>) with every check that does not set its own C(Authorization) header.'
      - Never appears in the results, not even if the service echoes it.
    type: str
  validate_certs:
    description:
      - Verify the TLS certificates of C(https://) and C(wss://) URLs. Set V(false) only for test hosts.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the certificate authorities to trust instead of the system ones.
    type: path
  timeout:
    description:
      - Seconds to wait for each response (and each WebSocket message).
    type: float
    default: 10
  concurrency:
    description:
      - How many checks run at the same time. V(1) runs them one after another.
    type: int
    default: 10
  wait_timeout:
    description:
      - Seconds to keep polling checks that fail. V(0) runs each check once (O(consecutive) times when that is
        more than one), without waiting.
      - A check that has passed O(consecutive) times in a row is not run again.
    type: float
    default: 0
  interval:
    description:
      - Seconds between two rounds of checks while polling.
    type: float
    default: 2
  consecutive:
    description:
      - Passes in a row each check needs. A failure starts its count again.
      - Use it to wait for a service to be stable rather than up once.
    type: int
    default: 1
  fail_after_identical:
    description:
      - While polling, a check that got the same failing answer (status, body and reasons) this many times in a
        row fails at once instead of being retried until O(wait_timeout), because the app is up and answers and a
        deterministic error does not go away by waiting.
      - Answers that mean "not ready yet" keep being polled until O(wait_timeout) whatever this says, namely no
        answer (connection refused, timeout) and the statuses 408, 425, 429, 502, 503 and 504.
      - V(0) polls every failure until O(wait_timeout).
    type: int
    default: 3
  run_writes_in_check_mode:
    description:
      - In check mode, checks whose method is not C(GET), C(HEAD) or C(OPTIONS), and WebSocket checks that
        send a message, are skipped and reported as skipped, because they may change the service.
        V(true) runs them anyway.
    type: bool
    default: false
  checks:
    description:
      - The checks. Each needs O(checks[].path) (with O(base_url)) or O(checks[].url).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the check, unique in the list; used in the results and the failure table.
        type: str
        required: true
      type:
        description:
          - V(http) makes a request; V(websocket) opens a WebSocket (C(ws://) or C(wss://); C(http(s)://) URLs
            built from O(base_url) are switched to C(ws(s)://)).
          - For V(websocket), O(checks[].body) or O(checks[].json) is the message sent after the handshake, and
            the expectations apply to the first message received. Without a message to send or any
            expectation, only the handshake is checked.
        type: str
        default: http
        choices: [ http, websocket ]
      method:
        description: HTTP method (V(http) checks).
        type: str
        default: GET
      path:
        description: Path appended to O(base_url), with its query string, V(/health?deep=1).
        type: str
      url:
        description: Absolute URL of the check, instead of O(checks[].path).
        type: str
      headers:
        description: Headers of this check, added to (and overriding) O(headers).
        type: dict
        default: {}
      body:
        description: Request body (or WebSocket message) as text.
        type: str
      json:
        description: Request body (or WebSocket message) as JSON; sets C(Content-Type) to C(application/json).
        type: raw
      status:
        description:
          - Status code, or list of status codes, that pass.
          - Defaults to V(200) for V(http) checks and V(101) (the handshake) for V(websocket) checks.
        type: list
        elements: int
      expect_json:
        description:
          - JSON the response must contain. Objects match when every given key matches (other keys are allowed);
            lists when every given element matches some element; other values by equality.
        type: raw
      expect_json_paths:
        description:
          - 'Values at paths of the JSON response, V({"checks.db.status": "ok", "items[0].id": 7}). Keys are
            separated by dots, list indexes are in brackets, keys with dots are quoted (V(["a.b"])).'
          - An object or list value matches as in O(checks[].expect_json).
        type: dict
      expect_text:
        description: A regular expression (Python syntax) the response body must contain a match of.
        type: str
      max_latency_ms:
        description:
          - Longest acceptable time from sending the request to the end of the response, in milliseconds
            (for V(websocket), handshake plus message round trip).
        type: int
      timeout:
        description: Seconds to wait for this check's response, instead of O(timeout).
        type: float
attributes:
  check_mode:
    support: full
    description: Runs the read-only checks and skips (and reports) the others, unless O(run_writes_in_check_mode).
  diff_mode:
    support: none
    description: Checks change nothing, so there is nothing to show.
notes:
  - The module never reports a change.
  - Redirects are not followed (as with C(curl) without C(-L)); list V(301) or V(302) in O(checks[].status)
    to accept one.
  - Header values (O(headers), O(checks[].headers), O(bearer_token)) must be one line of Latin-1 text without
    control characters, and header names RFC 9110 tokens; other values fail before any request, naming the option.
  - Numbers of seconds (O(timeout), O(wait_timeout), O(interval), O(checks[].timeout)) must be finite and at most
    604800 (7 days).
  - The failure message is a text table; with the default callback it shows with C(\n) escapes, with
    C(ANSIBLE_CALLBACK_RESULT_FORMAT=yaml) as a table.
seealso:
  - module: ansible.builtin.uri
    description: One request per task, with retries through C(until); no concurrency, JSON matching or WebSocket.
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Gate the release on the health endpoints, waiting up to 2 minutes for them to come up
  runbook.deploy.smoke_test:
    base_url: https://api.example.com
    bearer_token: "{{ vault_smoke_token }}"
    wait_timeout: 120
    interval: 5
    consecutive: 2
    checks:
      - name: backend
        path: /health
        expect_json: {status: healthy}
        max_latency_ms: 500
      - name: database
        path: /health/db
        expect_json_paths:
          status: healthy
          connections.active: 0
      - name: write sync worker
        path: /health/write-sync
        status: [200, 204]
      - name: frontend
        url: https://www.example.com/
        expect_text: '<title>Example</title>'
      - name: sync status socket
        type: websocket
        path: /ws/sync-status
        json: {type: subscribe, organizationId: org-rio}
        expect_json: {type: subscribed}

- name: Trigger a sync and check the answer (skipped in check mode)
  runbook.deploy.smoke_test:
    base_url: https://api.example.com
    bearer_token: "{{ vault_admin_token }}"
    checks:
      - name: write sync
        method: POST
        path: /api/pems/write-sync
        json: {organizationId: org-rio}
        status: [200, 202]
'''

RETURN = r'''
checks:
  description: Every check's last result, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The check's name.
      type: str
      sample: backend
    type:
      description: V(http) or V(websocket).
      type: str
      sample: http
    method:
      description: HTTP method.
      type: str
      sample: GET
    url:
      description: URL checked (without any C(user:password@)).
      type: str
      sample: https://api.example.com/health
    status:
      description: Status code of the last attempt, or null when there was no response.
      type: int
      sample: 200
    latency_ms:
      description: Milliseconds the last attempt took.
      type: float
      sample: 41.7
    passed:
      description: Whether the check passed (O(consecutive) times in a row).
      type: bool
      sample: true
    skipped:
      description: Whether the check was skipped (check mode, not read-only).
      type: bool
      sample: false
    attempts:
      description: How many times the check ran.
      type: int
      sample: 3
    gave_up:
      description:
        - Whether polling stopped before O(wait_timeout) because the check got the same failing answer
          O(fail_after_identical) times in a row.
      type: bool
      sample: false
    failures:
      description: Why the last attempt failed; empty when it passed.
      type: list
      elements: str
      sample: ["status 503, expected 200", "$.status is \"degraded\", expected \"healthy\""]
    body:
      description: The start (up to 500 characters) of the last response body or WebSocket message.
      type: str
      sample: '{"status":"healthy"}'
summary:
  description: Counts and timings.
  returned: always
  type: dict
  contains:
    total:
      description: Number of checks.
      type: int
      sample: 5
    passed:
      description: Checks that passed.
      type: int
      sample: 4
    failed:
      description: Checks that did not pass.
      type: int
      sample: 1
    skipped:
      description: Checks skipped in check mode.
      type: int
      sample: 0
    rounds:
      description: Rounds of checks run.
      type: int
      sample: 3
    elapsed:
      description: Seconds from the first request to the end.
      type: float
      sample: 4.21
headers:
  description: The headers sent with every check, secret values replaced by C(********).
  returned: always
  type: dict
  sample: {"Authorization": "********", "Accept": "application/json"}
'''

import concurrent.futures
import json
import re
import time
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.runbook.deploy.plugins.module_utils import http_client as http
from ansible_collections.runbook.deploy.plugins.module_utils import smoke

SAFE_METHODS = ('GET', 'HEAD', 'OPTIONS')
# Statuses of a service that is starting, overloaded or behind a proxy whose backend is not up yet: worth waiting for.
NOT_READY_STATUSES = (408, 425, 429, 502, 503, 504)
BODY_EXCERPT = 500


class SmokeTestError(Exception):
    """The options are wrong; the message is ready for fail_json."""


class Check(object):
    """One configured check, validated, with its running state."""

    def __init__(self, spec, base_url, common_headers, bearer_token, default_timeout):
        self.name = spec['name']
        self.type = spec['type']
        self.method = (spec['method'] or 'GET').upper()
        if not re.match(r'^[A-Z]+$', self.method):
            raise SmokeTestError("check '%s': method '%s' is not an HTTP method" % (self.name, spec['method']))
        if spec['url']:
            self.url = spec['url']
        elif base_url:
            self.url = http.join_url(base_url, spec['path'])
        else:
            raise SmokeTestError("check '%s': path '%s' needs base_url; set base_url or give the check a full url"
                                 % (self.name, spec['path']))
        scheme = self.url.split('://', 1)[0].lower() if '://' in self.url else ''
        if self.type == 'websocket':
            self.url = http.websocket_url(self.url)
            if scheme not in ('ws', 'wss', 'http', 'https'):
                raise SmokeTestError("check '%s': url '%s' must start with ws://, wss://, http:// or https://"
                                     % (self.name, http.strip_credentials(self.url)))
        elif scheme in ('ws', 'wss'):
            raise SmokeTestError("check '%s': url '%s' is a WebSocket URL; set type=websocket"
                                 % (self.name, http.strip_credentials(self.url)))
        elif scheme not in ('http', 'https'):
            raise SmokeTestError("check '%s': url '%s' must start with http:// or https://"
                                 % (self.name, http.strip_credentials(self.url)))
        # checked once here, so a bad value fails naming its option instead of in a request thread
        self.headers = http.check_headers(common_headers, 'headers')
        self.headers.update(http.check_headers(spec['headers'], "check '%s': headers" % self.name))
        if bearer_token and not any(k.lower() == 'authorization' for k in self.headers):
            self.headers['Authorization'] = http.check_header_value('Authorization', 'Bearer %s' % bearer_token,
                                                                    'bearer_token')
        self.body = spec['body']
        if spec['json'] is not None:
            try:
                self.body = json.dumps(spec['json'])
            except (TypeError, ValueError) as exc:
                raise SmokeTestError("check '%s': json cannot be serialised: %s" % (self.name, exc))
            if not any(k.lower() == 'content-type' for k in self.headers):
                self.headers['Content-Type'] = 'application/json'
        self.status = spec['status'] or ([101] if self.type == 'websocket' else [200])
        for code in self.status:
            if not 100 <= code <= 599:
                raise SmokeTestError("check '%s': status %s is not an HTTP status code (100-599)" % (self.name, code))
        self.expect_json = spec['expect_json']
        if isinstance(self.expect_json, str) and self.expect_json.strip()[:1] in ('{', '['):
            try:
                self.expect_json = json.loads(self.expect_json)
            except ValueError as exc:
                raise SmokeTestError("check '%s': expect_json looks like JSON but is not valid JSON (%s)" % (self.name, exc))
        self.expect_json_paths = spec['expect_json_paths'] or {}
        for path in self.expect_json_paths:
            try:
                smoke.parse_path(path)
            except smoke.ExpectationError as exc:
                raise SmokeTestError("check '%s': expect_json_paths: %s" % (self.name, exc))
        self.expect_text = smoke.compile_regex(spec['expect_text'], self.name) if spec['expect_text'] is not None else None
        self.max_latency_ms = spec['max_latency_ms']
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise SmokeTestError("check '%s': max_latency_ms must be a positive number of milliseconds" % self.name)
        self.timeout = default_timeout if spec['timeout'] is None else spec['timeout']
        http.check_seconds(self.timeout, "check '%s': timeout" % self.name, allow_minimum=False)
        # running state
        self.attempts = 0
        self.streak = 0
        self.done = False
        self.skipped = False
        # The same failing answer, how many times in a row; given_up once that reaches fail_after_identical.
        self.same_answer = None
        self.same_answers = 0
        self.given_up = False
        self.last = dict(status=None, latency_ms=None, failures=['not run'], body=None)

    @property
    def expects_body(self):
        return self.expect_json is not None or bool(self.expect_json_paths) or self.expect_text is not None

    @property
    def writes(self):
        if self.type == 'websocket':
            return self.body is not None
        return self.method not in SAFE_METHODS

    def run(self, context):
        """One attempt: dict(status, latency_ms, failures, body)."""
        started = time.monotonic()
        status = None
        text = None
        failures = []
        try:
            if self.type == 'websocket':
                outcome = http.websocket_exchange(self.url, headers=self.headers, timeout=self.timeout, context=context,
                                                  send=self.body, receive=self.expects_body)
                status, text = outcome.status, outcome.received
            else:
                response = http.request(self.method, self.url, headers=self.headers, body=self.body,
                                        timeout=self.timeout, context=context)
                status, text = response.status, response.text
        except http.HttpError as exc:
            refused = getattr(exc, 'result', None)
            status = refused.status if refused is not None else None
            failures.append(to_native(exc))
        latency = round((time.monotonic() - started) * 1000.0, 1)
        if status is not None and status not in self.status:
            failures.insert(0, 'status %s, expected %s' % (status, ' or '.join(str(s) for s in self.status)))
        if text is not None:
            failures.extend(smoke.body_mismatches(text, self.expect_json, self.expect_json_paths, self.expect_text))
        if self.max_latency_ms is not None and status is not None and latency > self.max_latency_ms:
            failures.append('latency %d ms > max_latency_ms %d' % (latency, self.max_latency_ms))
        return dict(status=status, latency_ms=latency, failures=failures,
                    body=text[:BODY_EXCERPT] if text is not None else None)

    def note_failure(self, outcome, limit):
        """Count identical failing answers from a service that answers; give up at limit (0: never)."""
        if outcome['status'] is None or outcome['status'] in NOT_READY_STATUSES:
            self.same_answer, self.same_answers = None, 0
            return
        answer = (outcome['status'], tuple(outcome['failures']), outcome['body'])
        self.same_answers = self.same_answers + 1 if answer == self.same_answer else 1
        self.same_answer = answer
        self.given_up = bool(limit) and self.same_answers >= limit

    def result(self):
        return dict(name=self.name, type=self.type, method='GET' if self.type == 'websocket' else self.method,
                    url=http.strip_credentials(self.url), status=self.last['status'],
                    latency_ms=self.last['latency_ms'], passed=self.done and not self.skipped, skipped=self.skipped,
                    attempts=self.attempts, gave_up=self.given_up,
                    failures=[] if self.skipped or self.done else self.last['failures'],
                    body=self.last['body'])


class SmokeTest(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.checks = []
        self.rounds = 0
        self.elapsed = 0.0
        self.redact = http.Redactor([self.params['bearer_token']])
        self.redact.add_headers(self.params['headers'])
        self.add_url_password(self.params['base_url'])
        for spec in self.params['checks'] or []:
            self.redact.add_headers(spec['headers'])
            self.add_url_password(spec['url'])

    def validate(self):
        p = self.params
        if p['base_url'] and not re.match(r'^(https?|wss?)://[^/]', p['base_url'], re.I):
            raise SmokeTestError("base_url '%s' must start with http:// or https://" % http.strip_credentials(p['base_url']))
        for name in ('concurrency', 'consecutive'):
            if p[name] < 1:
                raise SmokeTestError('%s must be 1 or more, not %s' % (name, p[name]))
        if p['fail_after_identical'] < 0:
            raise SmokeTestError('fail_after_identical must be 0 (never) or more, not %s' % p['fail_after_identical'])
        # NaN and infinity pass a plain comparison, then poll forever or overflow socket timeouts and time.sleep()
        http.check_seconds(p['timeout'], 'timeout', allow_minimum=False)
        for name in ('wait_timeout', 'interval'):
            http.check_seconds(p[name], name)
        if not p['checks']:
            raise SmokeTestError('checks is empty: give at least one check')
        seen = set()
        for spec in p['checks']:
            if spec['name'] in seen:
                raise SmokeTestError("two checks are named '%s'; check names must be unique" % spec['name'])
            seen.add(spec['name'])
            try:
                self.checks.append(Check(spec, p['base_url'], p['headers'], p['bearer_token'], p['timeout']))
            except smoke.ExpectationError as exc:
                raise SmokeTestError(to_native(exc))
        self.context = self.ssl_context()

    def add_url_password(self, url):
        match = re.match(r'^[a-z]+://([^/@]*)@', url or '', re.I)
        if match and ':' in match.group(1):
            self.redact.add(match.group(1).split(':', 1)[1])

    def safe_params(self):
        """Module args for the result's invocation, secret header values and tokens hidden."""
        params = dict(self.params, headers=http.redact_headers(self.params['headers']))
        if params['bearer_token']:
            params['bearer_token'] = 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
        params['checks'] = [dict(c, headers=http.redact_headers(c.get('headers'))) if isinstance(c, dict) else c
                            for c in params['checks'] or []]
        if params['base_url']:
            params['base_url'] = http.strip_credentials(params['base_url'])
        return self.redact(params)

    def ssl_context(self):
        needs_tls = any(c.url.lower().startswith(('https://', 'wss://')) for c in self.checks)
        if not needs_tls:
            if self.params['ca_path']:
                http.ssl_context(True, self.params['ca_path'])  # still report a wrong path
            return None
        return http.ssl_context(self.params['validate_certs'], self.params['ca_path'])

    def run(self):
        p = self.params
        if self.module.check_mode and not p['run_writes_in_check_mode']:
            for check in self.checks:
                if check.writes:
                    check.skipped = True
                    check.last = dict(status=None, latency_ms=None, failures=[], body=None)
        started = time.monotonic()
        deadline = started + p['wait_timeout']
        while True:
            pending = [c for c in self.checks if not c.done and not c.skipped and not c.given_up]
            if not pending:
                break
            self.rounds += 1
            outcomes = self.run_round(pending)
            failed = False
            for check, outcome in zip(pending, outcomes):
                check.attempts += 1
                check.last = outcome
                if outcome['failures']:
                    check.streak = 0
                    check.note_failure(outcome, p['fail_after_identical'])
                    failed = not check.given_up or failed
                else:
                    check.streak += 1
                    check.same_answer, check.same_answers = None, 0
                    check.done = check.streak >= p['consecutive']
            if all(c.done or c.skipped or c.given_up for c in self.checks):
                break
            now = time.monotonic()
            if failed and now >= deadline:
                break
            pause = min(p['interval'], deadline - now) if failed else p['interval']
            if pause > 0:
                time.sleep(pause)
        self.elapsed = round(time.monotonic() - started, 3)

    def run_round(self, pending):
        workers = min(self.params['concurrency'], len(pending))
        if workers == 1:
            return [check.run(self.context) for check in pending]
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(check.run, self.context) for check in pending]
            return [f.result() for f in futures]

    def results(self):
        checks = [c.result() for c in self.checks]
        summary = dict(total=len(checks), passed=sum(1 for c in checks if c['passed']),
                       failed=sum(1 for c in checks if not c['passed'] and not c['skipped']),
                       skipped=sum(1 for c in checks if c['skipped']), rounds=self.rounds, elapsed=self.elapsed)
        return self.redact(checks), summary

    def failure_message(self, checks, summary):
        failed = [dict(c, why='; '.join(c['failures']), attempts='%d' % c['attempts'],
                       latency='%d ms' % c['latency_ms'] if c['latency_ms'] is not None else None)
                  for c in checks if not c['passed'] and not c['skipped']]
        p = self.params
        if p['wait_timeout']:
            when = 'within wait_timeout=%gs' % p['wait_timeout']
        else:
            when = 'without waiting (wait_timeout=0)'
        needed = ' (%d passes in a row needed)' % p['consecutive'] if p['consecutive'] > 1 else ''
        given_up = [c.name for c in self.checks if c.given_up]
        if given_up:
            needed += ('; %s gave the same failing answer %d times in a row and was not retried further'
                       ' (fail_after_identical)' % (', '.join(given_up), p['fail_after_identical']))
        head = ('smoke test failed: %d of %d checks did not pass %s%s, after %d round(s) in %.1f s:'
                % (summary['failed'], summary['total'], when, needed, summary['rounds'], summary['elapsed']))
        table = smoke.render_table(failed, [('name', 'check'), ('url', 'url'), ('status', 'status'),
                                            ('latency', 'latency'), ('attempts', 'attempts'), ('why', 'why')])
        return self.redact(head + '\n' + table)


def main():
    argument_spec = dict(
        base_url=dict(type='str'),
        headers=dict(type='dict', default={}),
        bearer_token=dict(type='str', no_log=True),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        timeout=dict(type='float', default=10),
        concurrency=dict(type='int', default=10),
        wait_timeout=dict(type='float', default=0),
        interval=dict(type='float', default=2),
        consecutive=dict(type='int', default=1),
        fail_after_identical=dict(type='int', default=3),
        run_writes_in_check_mode=dict(type='bool', default=False),
        checks=dict(type='list', elements='dict', required=True, options=dict(
            name=dict(type='str', required=True),
            type=dict(type='str', default='http', choices=['http', 'websocket']),
            method=dict(type='str', default='GET'),
            path=dict(type='str'),
            url=dict(type='str'),
            headers=dict(type='dict', default={}),
            body=dict(type='str'),
            json=dict(type='raw'),
            status=dict(type='list', elements='int'),
            expect_json=dict(type='raw'),
            expect_json_paths=dict(type='dict'),
            expect_text=dict(type='str'),
            max_latency_ms=dict(type='int'),
            timeout=dict(type='float'),
        ), mutually_exclusive=[('path', 'url'), ('body', 'json')], required_one_of=[('path', 'url')]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    job = SmokeTest(module)
    common = dict(module.params['headers'])
    if module.params['bearer_token'] and not any(k.lower() == 'authorization' for k in common):
        common['Authorization'] = 'Bearer ********'
    result = dict(changed=False, checks=[], summary={}, headers=http.redact_headers(common))
    # AnsibleModule would echo the headers option as given (API keys in X-Api-Key and the like).
    result['invocation'] = dict(module_args=job.safe_params())
    try:
        job.validate()
        job.run()
        result['checks'], result['summary'] = job.results()
        result['headers'] = job.redact(result['headers'])
        if result['summary']['failed']:
            module.fail_json(msg=job.failure_message(result['checks'], result['summary']), **result)
    except (SmokeTestError, http.HttpError) as exc:
        module.fail_json(msg=job.redact(to_native(exc)), **result)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg=job.redact('smoke_test failed unexpectedly: %s' % to_native(exc)),
                         exception=job.redact(traceback.format_exc()), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
