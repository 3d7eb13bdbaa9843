"""The polling and check-mode logic of smoke_test (plugins/modules/smoke_test.py), with scripted checks."""

from __future__ import annotations

import time

import pytest

from ansible_collections.runbook.deploy.plugins.modules import smoke_test

BASE = dict(base_url='http://svc.test', headers={}, bearer_token=None, validate_certs=True, ca_path=None, timeout=5.0,
            concurrency=4, wait_timeout=0.0, interval=0.0, consecutive=1, fail_after_identical=3,
            run_writes_in_check_mode=False)
CHECK = dict(type='http', method='GET', path=None, url=None, headers={}, body=None, json=None, status=None,
             expect_json=None, expect_json_paths=None, expect_text=None, max_latency_ms=None, timeout=None)


class FakeModule(object):
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = dict(BASE, **params)


def job_with(outcomes, check_mode=False, **params):
    """A SmokeTest whose checks answer from scripted outcome lists (True = pass) instead of the network."""
    specs = [dict(CHECK, name=name, path='/' + name, **extra) for name, (dummy, extra) in outcomes.items()]
    job = smoke_test.SmokeTest(FakeModule(check_mode, checks=specs, **params))
    job.validate()
    for check in job.checks:
        check.run = scripted(list(outcomes[check.name][0]))
    return job


def scripted(script):
    def run(context):
        passed = script.pop(0) if script else False
        return dict(status=200 if passed else 503, latency_ms=1.0, failures=[] if passed else ['status 503'], body='')
    return run


def test_polling_stops_polling_checks_that_passed():
    job = job_with({'a': ([False, False, True], {}), 'b': ([True], {})}, wait_timeout=10)
    job.run()
    checks, summary = job.results()
    assert [(c['name'], c['attempts'], c['passed']) for c in checks] == [('a', 3, True), ('b', 1, True)]
    assert summary['rounds'] == 3 and summary['failed'] == 0


def test_consecutive_resets_on_failure():
    job = job_with({'a': ([True, False, True, True], {})}, wait_timeout=10, consecutive=2)
    job.run()
    assert job.results()[0][0]['attempts'] == 4


def test_without_wait_timeout_a_failure_ends_the_run():
    job = job_with({'a': ([True, False, True], {})}, consecutive=3)
    job.run()
    checks, summary = job.results()
    assert checks[0]['attempts'] == 2 and not checks[0]['passed'] and summary['failed'] == 1
    message = job.failure_message(checks, summary)
    assert message.splitlines()[0] == ('smoke test failed: 1 of 1 checks did not pass without waiting (wait_timeout=0) '
                                       '(3 passes in a row needed), after 2 round(s) in %.1f s:' % summary['elapsed'])


def test_deadline_with_interval():
    job = job_with({'a': ([], {})}, wait_timeout=0.3, interval=0.1)
    started = time.monotonic()
    job.run()
    assert 0.3 <= time.monotonic() - started < 1.0
    assert 3 <= job.results()[0][0]['attempts'] <= 5


def test_check_mode_skips_writes_only():
    job = job_with({'get': ([True], {}), 'post': ([True], dict(method='post')), 'head': ([True], dict(method='HEAD')),
                    'ws': ([True], dict(type='websocket', body='hi')), 'ws_ro': ([True], dict(type='websocket'))},
                   check_mode=True)
    job.run()
    checks = dict((c['name'], c) for c in job.results()[0])
    assert [n for n, c in checks.items() if c['skipped']] == ['post', 'ws']
    assert checks['post']['method'] == 'POST' and checks['ws_ro']['url'] == 'ws://svc.test/ws_ro'


def test_bearer_token_is_sent_but_redacted():
    job = smoke_test.SmokeTest(FakeModule(bearer_token='secret-token-xyz', headers={'X-Api-Key': 'k-123456'},
                                          checks=[dict(CHECK, name='a', path='/a')]))
    job.validate()
    assert job.checks[0].headers['Authorization'] == 'Bearer secret-token-xyz'
    assert job.redact('echo secret-token-xyz k-123456') == 'echo ******** ********'
    assert job.safe_params()['headers'] == {'X-Api-Key': '********'}


@pytest.mark.parametrize('extra,fragment', [
    (dict(status=[42]), 'status 42 is not an HTTP status code'),
    (dict(method='GE T'), "method 'GE T' is not an HTTP method"),
    (dict(max_latency_ms=0), 'max_latency_ms must be a positive'),
    (dict(path=None, url='file:///etc/passwd'), 'must start with http:// or https://'),
])
def test_check_options_are_validated(extra, fragment):
    spec = dict(CHECK, name='c', path='/x')
    spec.update(extra)
    job = smoke_test.SmokeTest(FakeModule(checks=[spec]))
    with pytest.raises(smoke_test.SmokeTestError, match=fragment):
        job.validate()
