"""runbook.deploy.smoke_test against a real local HTTP(S) + WebSocket server (tests/servers/smoke_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from helpers import REPO, assert_clear_failure, free_port

sys.path.insert(0, os.path.join(REPO, 'tests', 'servers'))
from smoke_server import SmokeServer  # noqa: E402  pylint: disable=wrong-import-position

MODULE = 'runbook.deploy.smoke_test'
TOKEN = 'tok-%s' % uuid.uuid4().hex


@pytest.fixture(scope='module')
def server():
    srv = SmokeServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope='module')
def tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tls')
    cert, key = str(folder / 'cert.pem'), str(folder / 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
                    '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope='module')
def tls_server(tls_files):
    srv = SmokeServer(*tls_files).start()
    yield srv
    srv.stop()


@pytest.fixture
def smoke(run_module, server):
    def call(check=False, **args):
        merged = dict(base_url=server.url)
        merged.update(args)
        return run_module(MODULE, check=check, **merged)
    return call


def by_name(result):
    return dict((c['name'], c) for c in result['checks'])


def test_healthy_service_passes_every_kind_of_expectation(smoke, server):
    result = smoke(checks=[
        dict(name='health', path='/healthy', expect_json={'status': 'healthy'}, max_latency_ms=2000),
        dict(name='nested', path='/json', expect_json={'checks': {'db': {'status': 'ok'}}, 'items': [{'name': 'beta'}]},
             expect_json_paths={'checks.db.connections': 3, 'items[1].id': 2, 'ready': True, '["a.b"]': 'dotted'}),
        dict(name='page', path='/text', expect_text=r'<title>Release 1\.2\.\d+</title>'),
        dict(name='redirect kept', path='/redirect', status=[301, 302]),
        dict(name='runbook string', path='/healthy', expect_json='{"status":"healthy"}'),
    ])
    assert not result.get('failed'), result
    assert result['changed'] is False
    assert result['summary'] == dict(total=5, passed=5, failed=0, skipped=0, rounds=1, elapsed=result['summary']['elapsed'])
    checks = by_name(result)
    assert [c['name'] for c in result['checks']] == ['health', 'nested', 'page', 'redirect kept', 'runbook string']
    assert checks['health']['status'] == 200 and checks['health']['passed'] and checks['health']['failures'] == []
    assert 0 < checks['health']['latency_ms'] < 2000
    assert checks['health']['url'] == server.url + '/healthy'
    assert checks['redirect kept']['status'] == 302


def test_failures_are_reported_per_check_and_as_a_table(smoke, server):
    closed = 'http://127.0.0.1:%d/health' % free_port()
    result = smoke(checks=[
        dict(name='ok', path='/healthy'),
        dict(name='server error', path='/fail', expect_json={'status': 'healthy'}),
        dict(name='too slow', path='/slow?ms=300', max_latency_ms=100),
        dict(name='wrong value', path='/json', expect_json_paths={'checks.db.status': 'down', 'nope.x': 1}),
        dict(name='not json', path='/text', expect_json={'status': 'healthy'}),
        dict(name='regex', path='/text', expect_text='Release 9'),
        dict(name='down', url=closed),
        dict(name='bool is not 1', path='/json', expect_json_paths={'ready': 1}),
    ])
    assert_clear_failure(result, 'smoke test failed: 7 of 8 checks did not pass', 'wait_timeout=0', '| why')
    checks = by_name(result)
    assert checks['ok']['passed'] and not checks['server error']['passed']
    assert checks['server error']['failures'] == ['status 500, expected 200',
                                                  '$.status is "unhealthy", expected "healthy"']
    assert checks['too slow']['status'] == 200
    assert checks['too slow']['failures'][0].startswith('latency ') and 'max_latency_ms 100' in checks['too slow']['failures'][0]
    assert checks['wrong value']['failures'] == ['checks.db.status is "ok", expected "down"', 'nope.x is missing']
    assert checks['not json']['failures'][0].startswith('body is not JSON')
    assert 'does not match /Release 9/' in checks['regex']['failures'][0]
    assert checks['down']['status'] is None and 'refused' in checks['down']['failures'][0]
    assert checks['bool is not 1']['failures'] == ['ready is true, expected 1']
    lines = result['msg'].splitlines()
    assert lines[1].split('|')[0].strip() == 'check' and set(lines[2]) <= set('-+')
    table = '\n'.join(lines[3:])
    for name in ('server error', 'too slow', 'wrong value', 'not json', 'regex', 'down', 'bool is not 1'):
        assert name in table
    assert '| ok ' not in table and not any(line.startswith('ok ') for line in lines)
    assert result['summary']['failed'] == 7 and result['summary']['passed'] == 1


def test_wait_timeout_polls_a_flapping_endpoint_until_it_passes(smoke, server):
    key = uuid.uuid4().hex
    once = smoke(checks=[dict(name='flap', path='/flap?key=%s&fails=2' % key)])
    assert_clear_failure(once, 'status 503, expected 200')
    assert by_name(once)['flap']['attempts'] == 1
    key = uuid.uuid4().hex
    result = smoke(wait_timeout=20, interval=0.2, checks=[dict(name='flap', path='/flap?key=%s&fails=2' % key),
                                                          dict(name='health', path='/healthy')])
    assert not result.get('failed'), result
    checks = by_name(result)
    assert checks['flap']['attempts'] == 3 and checks['flap']['passed']
    assert checks['health']['attempts'] == 1, 'a passed check is not polled again'
    assert server.calls[('GET', '/flap')] >= 4
    assert result['summary']['rounds'] == 3


def test_consecutive_passes_are_required(smoke):
    key = uuid.uuid4().hex
    result = smoke(wait_timeout=20, interval=0.1, consecutive=3,
                   checks=[dict(name='flap', path='/flap?key=%s&fails=1' % key), dict(name='health', path='/healthy')])
    assert not result.get('failed'), result
    checks = by_name(result)
    assert checks['flap']['attempts'] == 4 and checks['health']['attempts'] == 3
    # without wait_timeout a failure ends it at once, even while counting passes
    key = uuid.uuid4().hex
    result = smoke(consecutive=2, interval=0.1, checks=[dict(name='flap', path='/flap?key=%s&fails=1' % key)])
    assert_clear_failure(result, '(2 passes in a row needed)', 'status 503')


def test_deadline_is_kept_when_a_check_never_passes(smoke):
    # fail_after_identical=0: the same 500 every time is polled until the deadline too.
    result = smoke(wait_timeout=2, interval=0.5, fail_after_identical=0, checks=[dict(name='broken', path='/fail')])
    assert_clear_failure(result, 'within wait_timeout=2s', 'broken')
    assert 2.0 <= result['summary']['elapsed'] < 4.0
    assert 4 <= by_name(result)['broken']['attempts'] <= 6
    assert by_name(result)['broken']['gave_up'] is False


def test_the_same_failing_answer_fails_at_once_while_not_ready_keeps_polling(smoke):
    """A deterministic 500 from an app that is up is not retried for the whole wait_timeout (issue 16 item 6): users
    of a one-host environment got 500s for 44 s. No answer yet, and 503 while starting, keep being polled."""
    result = smoke(wait_timeout=30, interval=0.1, checks=[dict(name='broken', path='/fail'),
                                                          dict(name='health', path='/healthy')])
    assert_clear_failure(result, 'broken gave the same failing answer 3 times in a row', 'fail_after_identical',
                         'status 500')
    checks = by_name(result)
    assert checks['broken']['attempts'] == 3 and checks['broken']['gave_up'] is True, checks
    assert checks['health']['passed'] and checks['health']['gave_up'] is False
    assert result['summary']['elapsed'] < 15, result['summary']
    assert by_name(smoke(wait_timeout=30, interval=0.1, fail_after_identical=5,
                         checks=[dict(name='broken', path='/fail')]))['broken']['attempts'] == 5
    # Not ready yet: a 503, or nothing listening, is polled until the deadline.
    closed = 'http://127.0.0.1:%d/health' % free_port()
    for check in (dict(name='starting', path='/status/503'), dict(name='down', url=closed)):
        waited = smoke(wait_timeout=1.5, interval=0.1, checks=[check])
        assert_clear_failure(waited, 'within wait_timeout=1.5s')
        assert by_name(waited)[check['name']]['gave_up'] is False
        assert by_name(waited)[check['name']]['attempts'] > 5, waited


def test_checks_run_concurrently(smoke):
    checks = [dict(name='slow %d' % i, path='/slow?ms=400') for i in range(8)]
    parallel = smoke(concurrency=8, checks=checks)
    assert not parallel.get('failed'), parallel
    assert parallel['summary']['elapsed'] < 1.6
    serial = smoke(concurrency=1, checks=checks)
    assert not serial.get('failed'), serial
    assert serial['summary']['elapsed'] >= 3.2


def test_check_mode_skips_writes_unless_asked(smoke, server):
    key = uuid.uuid4().hex
    checks = [dict(name='read', path='/echo?%s' % key), dict(name='write', method='POST', path='/echo', json={'k': key}),
              dict(name='ws send', type='websocket', url=server.ws_url + '/echo', body='hi', expect_text='hi')]
    before = server.calls[('POST', '/echo')]
    result = smoke(check=True, checks=checks)
    assert not result.get('failed'), result
    checks_out = by_name(result)
    assert checks_out['read']['passed'] and not checks_out['read']['skipped']
    assert checks_out['write']['skipped'] and not checks_out['write']['passed'] and checks_out['write']['attempts'] == 0
    assert checks_out['ws send']['skipped']
    assert result['summary']['skipped'] == 2 and result['summary']['passed'] == 1
    assert server.calls[('POST', '/echo')] == before, 'check mode sent a POST'
    result = smoke(check=True, run_writes_in_check_mode=True, checks=checks)
    assert result['summary']['passed'] == 3 and result['summary']['skipped'] == 0
    assert server.calls[('POST', '/echo')] == before + 1
    assert json.loads(by_name(result)['write']['body'])['body'] == json.dumps({'k': key})


def test_tokens_never_appear_in_results_even_when_echoed(smoke, server):
    api_key = 'apikey-%s' % uuid.uuid4().hex
    password = 'pw-%s' % uuid.uuid4().hex
    base = server.url.replace('http://', 'http://deploy:%s@' % password)
    result = smoke(base_url=base, bearer_token=TOKEN, headers={'X-Api-Key': api_key, 'Accept': 'application/json'},
                   checks=[dict(name='echo', path='/echo', expect_json_paths={'headers.Authorization': 'Bearer ' + TOKEN}),
                           dict(name='echo fails', path='/echo', expect_text='no such thing'),
                           dict(name='own auth', path='/echo', headers={'Authorization': 'Basic ' + TOKEN},
                                expect_text='Basic')])
    text = json.dumps(result)
    assert TOKEN not in text and api_key not in text and password not in text
    checks = by_name(result)
    assert checks['echo']['passed'], 'the token was sent (the server echoed it) but is hidden in the result'
    assert result['headers'] == {'X-Api-Key': '********', 'Accept': 'application/json', 'Authorization': '********'}
    assert '"Bearer ********"' in checks['echo fails']['body'] and '"Authorization": "********"' in checks['own auth']['body']
    assert checks['echo fails']['url'] == server.url + '/echo'
    assert_clear_failure(result, 'echo fails')


def test_websocket_checks(smoke, server):
    ws = server.ws_url
    result = smoke(checks=[
        dict(name='handshake', type='websocket', url=ws + '/silent'),
        dict(name='echo', type='websocket', url=ws + '/echo', body='ping', expect_text='^ping$', max_latency_ms=2000),
        dict(name='subscribe', type='websocket', url=ws + '/echo', json={'type': 'subscribe', 'organizationId': 'org-rio'},
             expect_json={'type': 'subscribed', 'organizationId': 'org-rio'}),
        dict(name='push', type='websocket', url=ws + '/push', expect_json_paths={'type': 'hello'}),
    ])
    assert not result.get('failed'), result
    checks = by_name(result)
    assert all(c['status'] == 101 and c['method'] == 'GET' for c in result['checks'])
    assert checks['echo']['body'] == 'ping' and checks['push']['body'].startswith('{"type": "hello"')
    result = smoke(timeout=1, checks=[
        dict(name='refused', type='websocket', url=ws + '/reject'),
        dict(name='never answers', type='websocket', url=ws + '/silent', body='hello?', expect_text='.'),
        dict(name='wrong reply', type='websocket', url=ws + '/echo', body='ping', expect_text='^pong$'),
        dict(name='plain http', type='websocket', path='/healthy'),
    ])
    assert_clear_failure(result, 'refused', 'never answers', 'wrong reply', 'plain http')
    checks = by_name(result)
    assert checks['refused']['status'] == 403 and checks['refused']['failures'][0] == 'status 403, expected 101'
    assert 'within 1' in checks['never answers']['failures'][0]
    assert 'does not match /^pong$/' in checks['wrong reply']['failures'][0]
    assert checks['plain http']['url'].startswith('ws://') and checks['plain http']['status'] == 200


def test_tls_certificates_are_verified(run_module, tls_server, tls_files):
    cert = tls_files[0]
    checks = [dict(name='https', path='/healthy'),
              dict(name='wss', type='websocket', url=tls_server.ws_url + '/echo', body='x', expect_text='x')]
    untrusted = run_module(MODULE, base_url=tls_server.url, checks=checks)
    assert_clear_failure(untrusted, 'not trusted', 'ca_path')
    trusted = run_module(MODULE, base_url=tls_server.url, ca_path=cert, checks=checks)
    assert not trusted.get('failed'), trusted
    unverified = run_module(MODULE, base_url=tls_server.url, validate_certs=False, checks=checks)
    assert not unverified.get('failed'), unverified


def test_a_path_that_is_not_ascii_is_percent_encoded(smoke, server):
    # http.client sends the request line as ASCII: this raised UnicodeEncodeError in the check's thread
    result = smoke(checks=[dict(name='h', path='/echo?q=caf\u00e9', expect_json_paths={'path': '/echo?q=caf%C3%A9'}),
                           dict(name='w', type='websocket', url=server.ws_url + '/\u00e9cho', status=[101, 404, 403])])
    assert 'unexpectedly' not in result.get('msg', ''), result
    assert not result.get('failed'), result


@pytest.mark.parametrize('args,fragments', [
    (dict(checks=[dict(name='h', path='/healthy')]), ["check 'h': path '/healthy' needs base_url"]),
    (dict(base_url='ftp://example.com', checks=[dict(name='h', path='/')]), ['base_url', 'http://']),
    (dict(base_url='http://127.0.0.1:1', checks=[dict(name='h', path='/'), dict(name='h', path='/x')]),
     ["two checks are named 'h'"]),
    (dict(base_url='http://127.0.0.1:1', fail_after_identical=-1, checks=[dict(name='h', path='/')]),
     ['fail_after_identical must be 0 (never) or more, not -1']),
    (dict(base_url='http://127.0.0.1:1', checks=[dict(name='h', path='/', expect_text='(')]),
     ["check 'h': expect_text is not a valid regular expression"]),
    (dict(base_url='http://127.0.0.1:1', checks=[dict(name='h', path='/', expect_json_paths={'a..b': 1})]),
     ["check 'h': expect_json_paths", "'a..b'"]),
    (dict(checks=[dict(name='w', url='ws://127.0.0.1:1/ws')]), ["check 'w'", 'set type=websocket']),
    (dict(base_url='http://127.0.0.1:1', concurrency=0, checks=[dict(name='h', path='/')]), ['concurrency must be 1 or more']),
    (dict(base_url='http://127.0.0.1:1', checks=[dict(name='h', path='/', status=[999])]),
     ["check 'h': status 999 is not an HTTP status code"]),
    (dict(base_url='https://127.0.0.1:1', ca_path='/nonexistent/ca.pem', checks=[dict(name='h', path='/')]),
     ["ca_path '/nonexistent/ca.pem' does not exist"]),
    (dict(base_url='http://127.0.0.1:1', checks=[dict(name='h', path='/', url='http://127.0.0.1:1/')]),
     ['mutually exclusive', 'path', 'url']),
    (dict(base_url='http://127.0.0.1:1', checks=[]), ['checks is empty']),
    (dict(base_url='http://127.0.0.1:1', checks=[dict(name='h', path='/', expect_json='{"status": }')]),
     ["check 'h': expect_json looks like JSON but is not valid JSON"]),
])
def test_bad_inputs_fail_clearly(run_module, args, fragments):
    result = run_module(MODULE, **args)
    assert_clear_failure(result, *fragments)
    assert 'Traceback' not in str(result.get('exception', '')), 'an expected error, not a crash'


# Header values http.client cannot send (a line break would also inject a header), and names that are not tokens.
BAD_HEADERS = [({'X-Trace': 'a\r\nX-Injected: 1'}, 'line break'), ({'X-Trace': 'a\nb'}, 'line break'),
               ({'X-Trace': 'snow \u2603'}, 'Latin-1'), ({'X-Trace': 'a\x00b'}, 'control character'),
               ({'X Trace:': 'a'}, 'not a valid header name')]
HEADER_IDS = ['crlf', 'lf', 'non-latin-1', 'nul', 'name']


# every bad kind through the common headers; the per-check and WebSocket paths with a few (same helper)
HEADER_CASES = ([('headers',) + case for case in BAD_HEADERS] + [('checks[].headers',) + BAD_HEADERS[0],
                ('checks[].headers',) + BAD_HEADERS[2], ('websocket',) + BAD_HEADERS[0], ('websocket',) + BAD_HEADERS[4]])
HEADER_CASE_IDS = (['headers-' + i for i in HEADER_IDS] + ['check-crlf', 'check-non-latin-1', 'websocket-crlf',
                                                           'websocket-name'])


@pytest.mark.parametrize('where,headers,why', HEADER_CASES, ids=HEADER_CASE_IDS)
def test_bad_header_fails_naming_the_option(run_module, server, where, headers, why):
    check = dict(name='h', path='/echo')
    if where == 'websocket':
        check = dict(name='h', type='websocket', url=server.ws_url + '/echo', headers=headers)
    args = dict(base_url=server.url, checks=[check])
    if where == 'headers':
        args['headers'] = headers
        option = 'headers'
    else:
        check['headers'] = headers
        option = "check 'h': headers"
    result = run_module(MODULE, **args)
    assert_clear_failure(result, option, "'%s'" % list(headers)[0], why)
    assert 'unexpectedly' not in result['msg']


@pytest.mark.parametrize('token,why', [(TOKEN + '\r\nX-Injected: 1', 'line break'), (TOKEN + '\u2603', 'Latin-1')],
                         ids=['crlf', 'non-latin-1'])
def test_bad_bearer_token_fails_naming_the_option_and_hides_it(smoke, token, why):
    result = smoke(bearer_token=token, checks=[dict(name='h', path='/echo')])
    assert_clear_failure(result, 'bearer_token', why)
    assert TOKEN not in json.dumps(result)


@pytest.mark.parametrize('args,option', [
    (dict(timeout='1e308'), 'timeout'), (dict(timeout='nan'), 'timeout'), (dict(timeout='inf'), 'timeout'),
    (dict(timeout='-1'), 'timeout'),
    (dict(wait_timeout='1e308'), 'wait_timeout'), (dict(wait_timeout='nan'), 'wait_timeout'),
    (dict(wait_timeout='inf'), 'wait_timeout'), (dict(wait_timeout='-1'), 'wait_timeout'),
    (dict(interval='1e308'), 'interval'), (dict(interval='nan'), 'interval'), (dict(interval='inf'), 'interval'),
    (dict(interval='-1'), 'interval'),
    (dict(check_timeout='1e308'), "check 'h': timeout"), (dict(check_timeout='nan'), "check 'h': timeout"),
    (dict(check_timeout='0'), "check 'h': timeout"),
], ids=lambda v: v if isinstance(v, str) else '-'.join('%s=%s' % kv for kv in v.items()))
def test_bad_seconds_fail_naming_the_option(smoke, args, option):
    check = dict(name='h', path='/healthy')
    if 'check_timeout' in args:
        check['timeout'] = args.pop('check_timeout')
    result = smoke(checks=[check], **args)
    assert_clear_failure(result, option)
    assert 'unexpectedly' not in result['msg']
