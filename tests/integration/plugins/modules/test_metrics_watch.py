"""runbook.deploy.metrics_watch against a real local metrics service (tests/servers/metrics_server.py).

The watch runs in the main thread (Ansible needs it); timers change the service's numbers while it runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid

import pytest

from helpers import REPO, assert_clear_failure, connect, free_port, sql

sys.path.insert(0, os.path.join(REPO, 'tests', 'servers'))
from metrics_server import MetricsServer  # noqa: E402  pylint: disable=wrong-import-position

MODULE = 'runbook.deploy.metrics_watch'
TOKEN = 'tok-%s' % uuid.uuid4().hex


@pytest.fixture
def server():
    srv = MetricsServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def watch(run_module, server):
    def call(check=False, **args):
        merged = dict(
            sources=[dict(name='prom', url=server.url + '/metrics'),
                     dict(name='app', url=server.url + '/metrics.json')],
            duration=2, interval=0.5, timeout=2)
        merged.update(args)
        return run_module(MODULE, check=check, **merged)
    return call


def later(server, seconds, **changes):
    """Change the service's numbers `seconds` after the watch's first request, from another thread
    (Ansible takes a second or so to start the module, so a timer started by the test would be early)."""
    def change():
        deadline = time.monotonic() + 30
        while not sum(server.calls.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(seconds)
        server.set(**changes)

    thread = threading.Thread(target=change, daemon=True)
    thread.start()
    return thread


RUNBOOK_THRESHOLDS = [
    dict(name='error_rate', source='app', metric='errors.rate', op='<', value=0.05),
    dict(name='error_ratio', source='prom', metric='http_requests_total{status=~"5.."}', divide_by='http_requests_total',
         rate=True, op='<', value=0.05),
    dict(name='p95_latency', source='prom', metric='http_request_duration_seconds', quantile=0.95, rate=True,
         op='<', value=0.5),
    dict(name='queue_size', source='prom', metric='app_queue_size', op='max', value=1000),
]


def test_healthy_service_passes_with_numbers(watch, server):
    result = watch(thresholds=RUNBOOK_THRESHOLDS, health_url=server.url + '/health')
    assert not result.get('failed'), result
    assert result['changed'] is False
    assert result['passed'] is True and result['decision'] == 'keep' and result['breaches'] == []
    assert result['samples'] == 5  # t = 0, 0.5, 1, 1.5, 2
    assert 2.0 <= result['duration_s'] < 4
    th = result['thresholds']
    assert set(th) == {'error_rate', 'error_ratio', 'p95_latency', 'queue_size', 'health'}
    assert th['error_rate'] == dict(source='app', metric='errors.rate', op='<', limit=0.05, for_s=0.0,
                                    severity='immediate', escalate_after_s=None, samples=5, missing=0, min=0.01,
                                    max=0.01, last=0.01, breached=False, warned=False)
    assert result['conditional_breaches'] == []
    # rates need two samples: the first one is missing
    assert th['error_ratio']['samples'] == 4 and th['error_ratio']['missing'] == 1
    assert th['error_ratio']['last'] == pytest.approx(0.01, rel=0.05)
    # every request takes 80 ms: the p95 is interpolated in the (0.05, 0.1] bucket
    assert th['p95_latency']['last'] == pytest.approx(0.05 + 0.05 * 0.95, rel=0.01)
    assert th['queue_size']['op'] == '<=' and th['queue_size']['last'] == 12
    assert th['health']['min'] == 1 and th['health']['samples'] == 5
    assert result['sources']['prom'] == dict(url=server.url + '/metrics', format='prometheus', reads=5, errors=0,
                                             error_kinds={}, last_error=None)
    assert result['inconclusive'] == []
    assert result['sources']['app']['format'] == 'json'
    assert server.calls['/metrics'] == 5 and server.calls['/metrics.json'] == 5 and server.calls['/health'] == 5


def test_breach_lasting_for_seconds_fails_with_the_numbers(watch, server):
    later(server, 0.7, error_rate=0.2)
    result = watch(duration=6, interval=0.5, thresholds=[
        dict(name='error_rate', source='app', metric='errors.rate', op='<', value=0.05, **{'for': 1.5})])
    assert_clear_failure(result, 'error_rate', 'errors.rate = 0.2', 'healthy is < 0.05', '(for: 1.5 s)',
                         "source 'app'", 'rollback recommended')
    assert result['passed'] is False and result['decision'] == 'rollback'
    [breach] = result['breaches']
    assert breach['threshold'] == 'error_rate' and breach['value'] == 0.2 and breach['limit'] == 0.05
    assert breach['op'] == '<' and breach['ongoing'] is True
    assert 1.5 <= breach['lasted_s'] < 2.5
    assert 0.7 <= breach['since_s'] <= 1.6
    assert breach['since'].endswith('Z') and 'T' in breach['since']
    # stop_on_breach: the watch ended at the breach, well before duration=6
    assert result['duration_s'] < 4
    assert result['thresholds']['error_rate']['max'] == 0.2 and result['thresholds']['error_rate']['min'] == 0.01


def test_blip_shorter_than_for_is_not_a_breach(watch, server):
    later(server, 0.6, error_rate=0.3)
    later(server, 1.3, error_rate=0.01)
    result = watch(duration=3, interval=0.5, thresholds=[
        dict(name='error_rate', source='app', metric='errors.rate', value=0.05, **{'for': 2})])
    assert not result.get('failed'), result
    assert result['passed'] is True and result['decision'] == 'keep'
    assert result['thresholds']['error_rate']['max'] == 0.3  # seen, and reported, but not a breach


def test_counter_rate_breach_from_prometheus(watch, server):
    later(server, 0.4, error_rate=0.5)
    result = watch(duration=4, interval=0.5, thresholds=[
        dict(name='error_ratio', source='prom', metric='http_requests_total{status=~"5.."}',
             divide_by='http_requests_total', rate=True, value=0.05, **{'for': 1})])
    assert_clear_failure(result, 'error_ratio', 'healthy is < 0.05', 'rollback recommended')
    assert result['breaches'][0]['value'] == pytest.approx(0.5, rel=0.1)


def test_p95_latency_breach(watch, server):
    later(server, 0.4, latency_ms=900)
    result = watch(duration=4, interval=0.5, thresholds=[
        dict(name='p95', source='prom', metric='http_request_duration_seconds', quantile=0.95, rate=True,
             value=0.5, **{'for': 0.5})])
    assert_clear_failure(result, 'p95', 'http_request_duration_seconds', 'rollback recommended')
    # all observations in the (0.5, 1.0] bucket: 0.5 + 0.5 * 0.95
    assert result['breaches'][0]['value'] == pytest.approx(0.975, rel=0.01)


def test_fail_on_breach_false_returns_the_decision(watch, server):
    server.set(queue_size=1500)
    result = watch(duration=1, fail_on_breach=False, thresholds=[
        dict(name='queue', source='app', metric='queue.size', op='max', value=1000)])
    assert not result.get('failed'), result
    assert result['passed'] is False and result['decision'] == 'rollback'
    assert result['breaches'][0]['value'] == 1500 and result['samples'] == 1
    assert 'rollback recommended' in result['msg']


def test_a_conditional_breach_is_kept_with_a_warning_and_the_watch_goes_on(watch, server):
    """Runbook 001's "Conditional Rollback If: queue size > 1000": monitor, no rollback, the whole window watched."""
    server.set(queue_size=1500)
    result = watch(duration=2, interval=0.5, thresholds=[
        dict(name='queue_size', source='app', metric='queue.size', op='max', value=1000, severity='conditional',
             escalate_after=30),
        dict(name='error_rate', source='app', metric='errors.rate', op='<', value=0.05)])
    assert not result.get('failed'), result
    assert result['passed'] is True and result['decision'] == 'monitor' and result['breaches'] == []
    [warning] = result['conditional_breaches']
    assert warning['threshold'] == 'queue_size' and warning['value'] == 1500 and warning['severity'] == 'conditional'
    assert warning['escalated'] is False and warning['escalate_after_s'] == 30 and warning['ongoing'] is True
    assert result['samples'] == 5  # a conditional breach does not stop the watch
    assert result['thresholds']['queue_size']['warned'] is True and result['thresholds']['queue_size']['breached'] is False
    for text in (result['msg'], ' '.join(result.get('warnings', []))):
        assert 'conditional breach' in text and 'queue_size: queue.size = 1500' in text
        assert 'monitor: no rollback (queue_size: rollback after 30 s)' in text
    # 30 s cannot pass in a 2-second window: the breach could only warn here, and the watch says so.
    assert ("threshold 'queue_size': escalate_after (30 s) is longer than this watch (2 s): a breach can only warn in it"
            in result['warnings']), result.get('warnings')


def test_a_conditional_breach_that_lasts_escalate_after_recommends_a_rollback(watch, server):
    server.set(queue_size=1500)
    result = watch(duration=6, interval=0.5, thresholds=[
        dict(name='queue_size', source='app', metric='queue.size', op='max', value=1000, severity='conditional',
             escalate_after=1.5)])
    assert_clear_failure(result, 'queue_size: queue.size = 1500', 'conditional, escalated after 1.5 s',
                         'rollback recommended')
    assert result['decision'] == 'rollback' and result['conditional_breaches'] == []
    [breach] = result['breaches']
    assert breach['escalated'] is True and breach['lasted_s'] >= 1.5
    # stop_on_breach stops at the escalation, not at the first (conditional) count
    assert result['samples'] == 4 and result['duration_s'] < 4


def test_stop_on_breach_false_watches_the_whole_duration(watch, server):
    server.set(queue_size=1500)
    later(server, 0.8, queue_size=10)
    result = watch(duration=2, interval=0.5, stop_on_breach=False, thresholds=[
        dict(name='queue', source='app', metric='queue.size', op='max', value=1000)])
    assert result['failed'] and result['samples'] == 5
    [breach] = result['breaches']
    assert breach['ongoing'] is False and breach['since_s'] < 0.1


def test_health_failing_longer_than_health_fail_for_is_a_breach(watch, server):
    later(server, 0.3, health_status=503)
    result = watch(sources=[], thresholds=[], health_url=server.url + '/health', health_fail_for=1, duration=4,
                   interval=0.5)
    assert_clear_failure(result, 'health: %s/health failing' % server.url, 'HTTP 503', 'rollback recommended')
    assert result['breaches'][0]['threshold'] == 'health' and result['breaches'][0]['lasted_s'] >= 1


def no_data_source(server, kind):
    """A metrics source that never gives a sample: nothing listening, an HTTP 500, or a page that is not metrics."""
    if kind == 'refused':
        return 'http://127.0.0.1:%d/metrics' % free_port()
    if kind == 'http 500':
        server.set(metrics_status=500)
        return server.url + '/metrics'
    return server.url + '/garbage'


NO_DATA = [('refused', ['3 of 3 read(s) failed', 'refused: 3', 'refused (is the service listening?)']),
           ('http 500', ['3 of 3 read(s) failed', 'HTTP 500: 3', 'HTTP 500 from']),
           ('unparseable', ['3 of 3 read(s) failed', 'unparseable: 3', 'cannot be read'])]


@pytest.mark.parametrize('kind,fragments', NO_DATA, ids=[k for k, f in NO_DATA])
def test_a_source_that_gives_no_sample_is_inconclusive_and_fails(run_module, server, kind, fragments):
    url = no_data_source(server, kind)
    result = run_module(MODULE, duration=1, interval=0.5, timeout=1, missing_metrics='fail',
                        sources=[dict(name='gone', url=url)],
                        thresholds=[dict(name='error_rate', metric='error_rate', value=0.05)])
    assert_clear_failure(result, 'inconclusive', "threshold 'error_rate'", "source 'gone'", 'on_inconclusive=keep',
                         *fragments)
    assert result['passed'] is False and result['decision'] == 'inconclusive' and result['breaches'] == []
    assert result['thresholds']['error_rate']['samples'] == 0 and result['thresholds']['error_rate']['missing'] == 3
    [why] = result['inconclusive']
    assert why['threshold'] == 'error_rate' and why['source'] == 'gone' and why['reads'] == 3
    assert why['failed_reads'] == 3 and sum(why['errors'].values()) == 3
    assert result['sources']['gone']['errors'] == 3


@pytest.mark.parametrize('kind,fragments', NO_DATA, ids=[k for k, f in NO_DATA])
def test_on_inconclusive_keep_keeps_with_a_warning(run_module, server, kind, fragments):
    url = no_data_source(server, kind)
    result = run_module(MODULE, duration=0, timeout=1, on_inconclusive='keep', sources=[dict(name='gone', url=url)],
                        thresholds=[dict(name='error_rate', metric='error_rate', value=0.05)])
    assert not result.get('failed'), result
    assert result['passed'] is True and result['decision'] == 'keep'
    assert result['inconclusive'][0]['threshold'] == 'error_rate'
    assert any('inconclusive' in w and "threshold 'error_rate'" in w and 'on_inconclusive=keep' in w
               for w in result.get('warnings', [])), result


def test_a_source_that_answers_some_reads_is_not_inconclusive(run_module, server):
    later(server, 0.3, metrics_status=500)
    result = run_module(MODULE, duration=1, interval=0.5, timeout=1, sources=[dict(name='app', url=server.url + '/metrics.json')],
                        thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05)])
    assert not result.get('failed'), result
    assert result['decision'] == 'keep' and result['inconclusive'] == []
    assert result['thresholds']['error_rate']['samples'] == 1 and result['thresholds']['error_rate']['missing'] == 2
    assert result['sources']['app']['errors'] == 2


def test_a_breach_wins_over_an_inconclusive_threshold(run_module, server):
    server.set(queue_size=1500)
    result = run_module(MODULE, duration=0, timeout=1, sources=[
        dict(name='app', url=server.url + '/metrics.json'),
        dict(name='gone', url='http://127.0.0.1:%d/metrics' % free_port())], thresholds=[
        dict(name='queue', source='app', metric='queue.size', op='max', value=1000),
        dict(name='error_rate', source='gone', metric='error_rate', value=0.05)])
    assert_clear_failure(result, 'rollback recommended')
    assert result['decision'] == 'rollback' and result['inconclusive'][0]['threshold'] == 'error_rate'


def test_unreachable_health_url_is_a_breach(run_module):
    closed = 'http://127.0.0.1:%d' % free_port()
    result = run_module(MODULE, duration=1, interval=0.5, timeout=1, health_url=closed + '/health')
    assert_clear_failure(result, 'health', 'refused', 'rollback recommended')
    assert result['decision'] == 'rollback'


def test_a_url_that_is_not_ascii_is_percent_encoded(watch, server):
    # http.client sends the request line as ASCII: this raised UnicodeEncodeError in the read thread
    result = watch(duration=0, sources=[dict(name='app', url=server.url + '/m\u00e9trics')],
                   health_url=server.url + '/h\u00e9alth', on_inconclusive='keep',
                   thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05)])
    assert_clear_failure(result, 'HTTP 404 from %s/h\u00e9alth' % server.url)
    assert 'unexpectedly' not in result['msg']
    assert server.calls['/m%C3%A9trics'] == 1 and server.calls['/h%C3%A9alth'] == 1


def test_check_mode_watches_for_real(watch, server):
    result = watch(check=True, duration=0, thresholds=RUNBOOK_THRESHOLDS[:1])
    assert not result.get('failed'), result
    assert result['samples'] == 1 and server.calls['/metrics.json'] == 1


def test_wrong_metric_name_fails_at_once_without_a_rollback_decision(watch, server):
    result = watch(duration=10, thresholds=[dict(name='typo', source='prom', metric='http_request_total', value=1)])
    assert_clear_failure(result, "threshold 'typo'", "'http_request_total' is not on the prometheus page of source 'prom'",
                         'missing_metrics=warn')
    assert result['decision'] == 'unknown' and result['samples'] == 1

    # warn: the metric may appear later; one that never does leaves the watch without data, which is inconclusive
    result = watch(duration=0, missing_metrics='warn', thresholds=[
        dict(name='typo', source='app', metric='errors.ratee', value=1)])
    assert_clear_failure(result, 'inconclusive', "threshold 'typo'", 'errors.ratee is not in the document')
    assert result['decision'] == 'inconclusive' and result['thresholds']['typo']['missing'] == 1
    assert any("'errors.ratee' is not on the json page" in w for w in result['warnings'])


@pytest.mark.parametrize('args,fragments', [
    (dict(sources=[], thresholds=[]), ['nothing to watch']),
    (dict(thresholds=[]), ['no thresholds']),
    (dict(thresholds=[dict(name='x', source='nope', metric='a', value=1)]), ["source 'nope' is not in sources (app, prom)"]),
    (dict(thresholds=[dict(name='health', metric='a', value=1)]), ["'health' is reserved"]),
    (dict(thresholds=[dict(name='x', source='prom', metric='a{b="c"', value=1)]), ["threshold 'x'", "missing '}'"]),
    (dict(thresholds=[dict(name='x', source='app', metric='a', quantile=0.95, value=1)]), ['quantile needs a Prometheus']),
    (dict(interval=0, thresholds=[dict(name='x', metric='a', value=1)]), ['interval must be more than 0']),
    (dict(sources=[dict(name='a', url='http://127.0.0.1:99999/m')], thresholds=[dict(name='x', metric='a', value=1)]),
     ["source 'a': url", 'Port out of range']),
    (dict(sources=[], thresholds=[], health_url='http://127.0.0.1:99999/health'), ['health_url', 'Port out of range']),
])
def test_bad_options_fail_clearly(watch, args, fragments):
    if args.get('thresholds') and args['thresholds'][0].get('quantile'):
        args['sources'] = [dict(name='app', url='http://127.0.0.1:1/x', format='json')]
    result = watch(**args)
    assert_clear_failure(result, *fragments)
    assert result['decision'] == 'unknown'


def test_tokens_never_appear_in_the_result(watch, server):
    server.set(error_rate=0.5)
    result = watch(duration=0, sources=[
        dict(name='app', url=server.url + '/metrics.json', bearer_token=TOKEN, headers={'X-Api-Key': TOKEN + 'k'})],
        thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05)])
    assert result['failed']
    text = json.dumps(result)
    assert TOKEN not in text
    assert result['invocation']['module_args']['sources'][0]['headers'] == {'X-Api-Key': '********'}


# Header values http.client cannot send (a line break would also inject a header), and names that are not tokens.
BAD_HEADERS = [({'X-Trace': 'a\r\nX-Injected: 1'}, 'line break'), ({'X-Trace': 'a\nb'}, 'line break'),
               ({'X-Trace': 'snow \u2603'}, 'Latin-1'), ({'X-Trace': 'a\x00b'}, 'control character'),
               ({'X Trace:': 'a'}, 'not a valid header name')]


@pytest.mark.parametrize('headers,why', BAD_HEADERS, ids=['crlf', 'lf', 'non-latin-1', 'nul', 'name'])
def test_bad_header_fails_naming_the_option(watch, server, headers, why):
    result = watch(duration=0, sources=[dict(name='app', url=server.url + '/metrics.json', headers=headers)],
                   thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05)])
    assert_clear_failure(result, "source 'app': headers", "'%s'" % list(headers)[0], why)
    assert 'unexpectedly' not in result['msg']
    assert server.calls['/metrics.json'] == 0


@pytest.mark.parametrize('token,why', [(TOKEN + '\r\nX-Injected: 1', 'line break'), (TOKEN + '\u2603', 'Latin-1')],
                         ids=['crlf', 'non-latin-1'])
def test_bad_bearer_token_fails_naming_the_option_and_hides_it(watch, server, token, why):
    result = watch(duration=0, sources=[dict(name='app', url=server.url + '/metrics.json', bearer_token=token)],
                   thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05)])
    assert_clear_failure(result, "source 'app': bearer_token", why)
    assert TOKEN not in json.dumps(result)


# Seconds that overflow (1e308: OverflowError in time.sleep / socket timeouts), are negative, zero, NaN or infinite.
BAD_SECONDS = [
    (dict(duration='1e308', interval='1e308'), 'duration'), (dict(duration='1e308'), 'duration'),
    (dict(duration='-1'), 'duration'), (dict(duration='nan'), 'duration'), (dict(duration='inf'), 'duration'),
    (dict(interval='1e308'), 'interval'), (dict(interval='0'), 'interval'), (dict(interval='-1'), 'interval'),
    (dict(interval='nan'), 'interval'), (dict(interval='inf'), 'interval'),
    (dict(timeout='1e308'), 'timeout'), (dict(timeout='-1'), 'timeout'), (dict(timeout='nan'), 'timeout'),
    (dict(timeout='inf'), 'timeout'),
    (dict(health_fail_for='nan'), 'health_fail_for'), (dict(health_fail_for='1e308'), 'health_fail_for'),
    (dict(thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05, **{'for': 'nan'})]),
     "threshold 'error_rate': for"),
    (dict(thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05, **{'for': '1e308'})]),
     "threshold 'error_rate': for"),
    (dict(thresholds=[dict(name='error_rate', metric='errors.rate', value='nan')]), "threshold 'error_rate': value"),
]


@pytest.mark.parametrize('args,option', BAD_SECONDS, ids=['-'.join('%s=%s' % kv for kv in sorted(a.items()))
                                                          if 'thresholds' not in a else 'thresholds-%s' % i
                                                          for i, (a, o) in enumerate(BAD_SECONDS)])
def test_bad_numbers_fail_naming_the_option(watch, server, args, option):
    merged = dict(duration=0, health_url=server.url + '/health',
                  sources=[dict(name='app', url=server.url + '/metrics.json')],
                  thresholds=[dict(name='error_rate', metric='errors.rate', value=0.05)])
    merged.update(args)
    result = watch(**merged)
    assert_clear_failure(result, option)
    assert 'unexpectedly' not in result['msg']
    assert result['decision'] == 'unknown'


def test_progress_file_says_where_the_watch_stands_while_it_runs_and_is_gone_after(watch, server, tmp_path):
    """What the watch role's heartbeats read: rewritten each round (0600, whole JSON each time), removed at the end."""
    progress = tmp_path / 'progress.json'
    seen = []
    done = threading.Event()

    def read():
        while not done.is_set():
            if progress.exists():
                seen.append((json.loads(progress.read_text()), oct(progress.stat().st_mode & 0o777)))
            time.sleep(0.1)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        result = watch(thresholds=[dict(name='queue_size', source='prom', metric='app_queue_size', op='<', value=1000)],
                       progress_file=str(progress))
    finally:
        done.set()
        reader.join()
    assert result['passed'] is True and result['samples'] == 5, result
    assert not progress.exists(), 'the progress file outlived the watch'
    assert seen and all(mode == '0o600' for dummy, mode in seen), seen
    samples = [state['samples'] for state, dummy in seen]
    assert samples == sorted(samples) and samples[-1] >= 3, samples
    last = seen[-1][0]
    assert last['duration_s'] == 2 and last['breaches'] == 0 and last['last'] == {'queue_size': 12.0}, last


# --- format: postgres, runbook 002's "Database Health" against the stack's PostgreSQL ------------------------------

def _pg_url(stack, dbname, user=None, password=None):
    from urllib.parse import quote
    return 'postgresql://%s:%s@%s:%s/%s' % (quote(user or stack['RUNBOOK_PG_USER'], safe=''),
                                            quote(password or stack['RUNBOOK_PG_PASSWORD'], safe=''),
                                            stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], dbname)


def test_a_postgres_source_reads_the_databases_health_and_hides_the_password(run_module, stack, make_db):
    db = make_db('watch', rows=1)
    idle = connect(stack, db)
    try:
        with idle.cursor() as cursor:
            cursor.execute('SELECT 1')
        result = run_module(MODULE, duration=1, interval=0.5, timeout=2,
                            sources=[dict(name='db', url=_pg_url(stack, db), format='postgres')],
                            thresholds=[dict(name='connections', source='db', metric='connections_used', op='<', value=0.8),
                                        dict(name='idle_tx', source='db', metric='longest_idle_in_transaction_s',
                                             op='<', value=300)])
    finally:
        idle.close()
    assert not result.get('failed'), result
    assert result['decision'] == 'keep' and result['samples'] == 3
    assert result['sources']['db']['format'] == 'postgres' and result['sources']['db']['errors'] == 0
    assert result['sources']['db']['url'] == _pg_url(stack, db).replace(
        '%s:%s@' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD']), '')
    used = result['thresholds']['connections']['last']
    assert 0 < used < 0.8  # the idle session at least, this reading's own connection not counted
    assert result['thresholds']['idle_tx']['last'] == 0
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(result)


def test_a_transaction_left_open_and_a_migration_waiting_behind_it_are_breaches(run_module, stack, make_db):
    """The migration hang runbook 002's health checks are for: an idle transaction holds a lock, an ALTER TABLE waits."""
    db = make_db('watch', rows=1)
    holder, waiter = connect(stack, db), connect(stack, db)
    holder.autocommit = False
    blocked = None
    try:
        with holder.cursor() as cursor:
            cursor.execute('SELECT count(*) FROM public.users')  # a share lock, then the session idles in transaction

        def migrate():
            with waiter.cursor() as cursor:
                cursor.execute('ALTER TABLE public.users ADD COLUMN note text')

        blocked = threading.Thread(target=migrate, daemon=True)
        blocked.start()
        time.sleep(1.2)
        result = run_module(MODULE, duration=2, interval=0.5, timeout=2, stop_on_breach=False, fail_on_breach=False,
                            sources=[dict(name='db', url=_pg_url(stack, db), format='postgres')],
                            thresholds=[dict(name='idle_tx', source='db', metric='longest_idle_in_transaction_s',
                                             op='<', value=1),
                                        dict(name='lock_waits', source='db', metric='waiting_on_locks', op='<', value=1),
                                        dict(name='lock_wait_age', source='db', metric='longest_lock_wait_s', op='<',
                                             value=1)])
    finally:
        holder.rollback()  # the ALTER TABLE goes through
        if blocked:
            blocked.join(10)
        holder.close()
        waiter.close()
    assert result['decision'] == 'rollback', result
    assert {b['threshold'] for b in result['breaches']} == {'idle_tx', 'lock_waits', 'lock_wait_age'}, result['breaches']
    assert result['thresholds']['lock_waits']['max'] == 1
    assert result['thresholds']['idle_tx']['max'] >= 1.2
    assert 'longest_idle_in_transaction_s' in result['msg'] and 'rollback recommended' in result['msg']


def test_a_user_without_pg_monitor_is_told_it_sees_only_its_own_sessions(run_module, stack, make_db):
    db = make_db('watch', rows=None)
    role = 'watcher_%s' % uuid.uuid4().hex[:8]
    password = 'p/ss@w:rd-%s' % uuid.uuid4().hex[:6]
    sql(stack, 'postgres', "CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, password))
    other = connect(stack, db)  # another role's session (the superuser's), idle in a transaction
    other.autocommit = False
    try:
        with other.cursor() as cursor:
            cursor.execute('SELECT 1')
        result = run_module(MODULE, duration=0, timeout=2,
                            sources=[dict(name='db', url=_pg_url(stack, db, role, password), format='postgres')],
                            thresholds=[dict(name='all', source='db', metric='sees_all_sessions', op='>=', value=1),
                                        dict(name='here', source='db', metric='database_connections', op='>=', value=0),
                                        dict(name='idle', source='db', metric='idle_in_transaction', op='>=', value=0)])
        assert result['decision'] == 'rollback' and result['thresholds']['all']['last'] == 0, (result.get('msg'), result)
        # The connections count every session (pg_stat_database), the states only this role's (pg_stat_activity).
        assert result['thresholds']['here']['last'] == 1 and result['thresholds']['idle']['last'] == 0, result
        assert password not in json.dumps(result)
        sql(stack, 'postgres', 'GRANT pg_monitor TO %s' % role)
        result = run_module(MODULE, duration=0, timeout=2,
                            sources=[dict(name='db', url=_pg_url(stack, db, role, password), format='postgres')],
                            thresholds=[dict(name='all', source='db', metric='sees_all_sessions', op='>=', value=1)])
        assert result['decision'] == 'keep' and result['thresholds']['all']['last'] == 1, result
    finally:
        other.rollback()
        other.close()
        sql(stack, 'postgres', 'DROP ROLE IF EXISTS %s' % role)


@pytest.mark.parametrize('source,fragments', [
    (dict(url='http://127.0.0.1:9/db'), ["source 'db': url: must start with postgres:// or postgresql://"]),
    (dict(url='postgresql://u:secret-pw@127.0.0.1:9'), ["source 'db': url names no database"]),
    (dict(url='postgresql://u:secret-pw@127.0.0.1:9/app', bearer_token='tok-123456'),
     ['headers and bearer_token are for HTTP sources']),
])
def test_a_bad_postgres_source_fails_clearly_without_its_password(run_module, source, fragments):
    result = run_module(MODULE, duration=0, sources=[dict(name='db', format='postgres', **source)],
                        thresholds=[dict(name='c', metric='connections', value=10)])
    assert_clear_failure(result, *fragments)
    assert 'secret-pw' not in json.dumps(result) and 'tok-123456' not in json.dumps(result)


def test_an_unreachable_database_is_a_missing_sample_then_inconclusive(run_module):
    result = run_module(MODULE, duration=0, timeout=1,
                        sources=[dict(name='db', format='postgres', url='postgresql://u:secret-pw@127.0.0.1:%d/app' % free_port())],
                        thresholds=[dict(name='c', metric='connections', value=10)])
    assert_clear_failure(result, 'inconclusive', "source 'db'", 'refused')
    assert result['sources']['db']['error_kinds'] == {'refused': 1}
    assert 'secret-pw' not in json.dumps(result)
