"""The Prometheus parser, selectors, histogram quantiles and threshold logic of metrics_watch
(plugins/module_utils/metrics.py)."""

from __future__ import annotations

import math

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import metrics

PAGE = r'''
# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
http_requests_total{method="get",code="500",} 7

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045
not_a_number NaN
minus_infinity -Inf

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="0.2"} 100392
http_request_duration_seconds_bucket{le="0.5"} 129389
http_request_duration_seconds_bucket{le="1"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
# TYPE jobs_failed_total counter
# TYPE openmetrics_total counter
openmetrics_total 5 # {trace_id="abc"} 1.0
'''


def test_parse_the_documented_example_page():
    page = metrics.parse_prometheus(PAGE)
    samples = dict(((n, tuple(sorted(l.items()))), v) for n, l, v in page.samples)
    assert samples[('http_requests_total', (('code', '200'), ('method', 'post')))] == 1027
    assert samples[('http_requests_total', (('code', '500'), ('method', 'get')))] == 7  # trailing comma
    key = ('msdos_file_access_time_seconds', (('error', 'Cannot find file:\n"FILE.TXT"'), ('path', 'C:\\DIR\\FILE.TXT')))
    assert samples[key] == 1.458255915e9
    assert samples[('metric_without_timestamp_and_labels', ())] == 12.47
    assert samples[('something_weird', (('problem', 'division by zero'),))] == float('inf')
    assert math.isnan(samples[('not_a_number', ())])
    assert samples[('minus_infinity', ())] == float('-inf')
    assert samples[('http_request_duration_seconds_bucket', (('le', '+Inf'),))] == 144320
    assert samples[('openmetrics_total', ())] == 5  # the exemplar is not the value
    assert page.types['http_request_duration_seconds'] == 'histogram'
    # families: declared ones, even without samples, and histogram names from their series
    assert page.has('jobs_failed_total') and page.has('http_request_duration_seconds')
    assert page.has('http_request_duration_seconds_bucket') and not page.has('http_request_total')


@pytest.mark.parametrize('line,fragment', [
    ('metric{a="b" 1', 'bad label name'),
    ('metric{a="b} 1', 'unterminated'),
    ('metric{a=b} 1', 'double quotes'),
    ('metric', 'no value'),
    ('metric one', "'one' is not a number"),
    ('{a="b"} 1', 'no metric name'),
])
def test_unreadable_lines_are_named(line, fragment):
    with pytest.raises(metrics.MetricsError) as error:
        metrics.parse_prometheus('ok 1\n' + line + '\n')
    assert 'line 2' in str(error.value) and fragment in str(error.value)


@pytest.mark.parametrize('selector,aggregation,expected', [
    ('http_requests_total', 'sum', 1037),
    ('http_requests_total{method="post"}', 'sum', 1030),
    ('http_requests_total{code=~"5.."}', 'sum', 7),
    ('http_requests_total{code!~"2..", method!="get"}', 'sum', 3),
    ('http_requests_total', 'max', 1027),
    ('http_requests_total', 'min', 3),
    ('http_requests_total', 'count', 3),
    ('http_requests_total{method="post"}', 'avg', 515),
    ('http_requests_total{code="503"}', 'sum', 0),       # known family, no such series yet: no errors so far
    ('http_requests_total{code="503"}', 'count', 0),
    ('jobs_failed_total', 'sum', 0),                      # declared, never incremented
    ('rpc_duration_seconds{quantile="0.99"}', 'sum', 76656),
    ('msdos_file_access_time_seconds{error=~".*\\"FILE.TXT\\""}', 'count', 1),
])
def test_selectors_and_aggregations(selector, aggregation, expected):
    page = metrics.parse_prometheus(PAGE)
    assert metrics.Selector(selector).value(page, aggregation) == expected


@pytest.mark.parametrize('selector,aggregation', [
    ('no_such_metric', 'sum'),
    ('http_requests_total{code="503"}', 'max'),  # a maximum of nothing is not 0
])
def test_missing_values(selector, aggregation):
    page = metrics.parse_prometheus(PAGE)
    with pytest.raises(metrics.Missing):
        metrics.Selector(selector).value(page, aggregation)


@pytest.mark.parametrize('text,fragment', [
    ('', 'empty'),
    ('9lives', 'does not start with a metric name'),
    ('a b', "expected '{'"),
    ('a{b="c"', "missing '}'"),
    ('a{b~"c"}', "expected '=' after label b"),
    ('a{b=~"("}', 'bad regular expression'),
    ('a{b="c"} x', "unexpected text after '}'"),
])
def test_bad_selectors(text, fragment):
    with pytest.raises(metrics.MetricsError) as error:
        metrics.Selector(text)
    assert fragment in str(error.value)


def test_histogram_quantile_interpolates_like_promql():
    page = metrics.parse_prometheus(PAGE)
    buckets = metrics.Selector('http_request_duration_seconds').buckets(page)
    assert metrics.Selector('http_request_duration_seconds_bucket').buckets(page) == buckets
    # rank 0.5 * 144320 = 72160, in (0.1, 0.2]: 0.1 + 0.1 * (72160 - 33444) / (100392 - 33444)
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.1 * 38716 / 66948)
    # rank 0.95 * 144320 = 137104 is past the last finite bucket: its upper bound
    assert metrics.histogram_quantile(0.95, buckets) == 1.0
    # in the first bucket the lower bound is 0
    assert metrics.histogram_quantile(0.1, buckets) == pytest.approx(0.05 * 14432 / 24054)


def test_histogram_quantile_edge_cases():
    inf = float('inf')
    with pytest.raises(metrics.Missing):
        metrics.histogram_quantile(0.9, {0.1: 1, 0.5: 2})  # no +Inf bucket
    with pytest.raises(metrics.Missing):
        metrics.histogram_quantile(0.9, {0.1: 0, inf: 0})  # no observations
    with pytest.raises(metrics.MetricsError):
        metrics.histogram_quantile(1.5, {0.1: 1, inf: 1})
    # non-monotonic counts (a scrape that is not atomic) are corrected upwards
    assert metrics.histogram_quantile(0.5, {0.1: 10, 0.2: 8, inf: 10}) == pytest.approx(0.05)
    # summed over other labels
    page = metrics.parse_prometheus('h_bucket{le="1",i="a"} 1\nh_bucket{le="+Inf",i="a"} 1\n'
                                    'h_bucket{le="1",i="b"} 3\nh_bucket{le="+Inf",i="b"} 3\n')
    assert metrics.Selector('h').buckets(page) == {1.0: 4.0, inf: 4.0}
    assert metrics.Selector('h{i="b"}').buckets(page) == {1.0: 3.0, inf: 3.0}


def test_json_values():
    doc = {'errors': {'rate': 0.02}, 'queues': [{'size': 3}, {'size': 5}], 'text': '7.5', 'flag': True,
           'sizes': [1, 2, 3]}
    assert metrics.json_value(doc, 'errors.rate') == 0.02
    assert metrics.json_value(doc, 'queues[1].size') == 5
    assert metrics.json_value(doc, 'text') == 7.5
    assert metrics.json_value(doc, 'sizes', 'max') == 3 and metrics.json_value(doc, 'sizes') == 6
    for path in ('errors.ratio', 'flag', 'queues'):
        with pytest.raises(metrics.Missing):
            metrics.json_value(doc, path)


def series(threshold, samples):
    """Feed (t, value) samples; return the times at which a breach started counting."""
    counted = []
    for t, value in samples:
        if threshold.observe(t, value, 'T%s' % t):
            counted.append(t)
    return counted


def test_a_breach_counts_once_it_has_lasted_for_seconds():
    th = metrics.Threshold('error_rate', 'app', 'errors.rate', '<', 0.05, for_s=2, kind='json')
    assert series(th, [(0, 0.01), (1, 0.2), (2, 0.3), (3, 0.1), (4, 0.01)]) == [3]
    [episode] = th.episodes
    assert episode['since'] == 'T1' and episode['since_s'] == 1 and episode['worst'] == 0.3
    assert episode['value'] == 0.1 and episode['lasted_s'] == 2 and episode['ongoing'] is False
    assert episode['healthy'] == '< 0.05' and episode['limit'] == 0.05
    assert th.stats() == dict(source='app', metric='errors.rate', op='<', limit=0.05, for_s=2.0, severity='immediate',
                              escalate_after_s=None, samples=5, missing=0, min=0.01, max=0.3, last=0.01, breached=True,
                              warned=False)
    assert episode['severity'] == 'immediate' and episode['escalated'] is False


def test_a_blip_shorter_than_for_is_not_a_breach_and_restarts_the_clock():
    th = metrics.Threshold('error_rate', 'app', 'errors.rate', '<', 0.05, for_s=2, kind='json')
    assert series(th, [(0, 0.2), (1, 0.2), (1.5, 0.01), (2, 0.2), (3, 0.2), (3.5, 0.01)]) == []
    assert th.episodes == [] and th.stats()['max'] == 0.2


def test_missing_samples_neither_start_nor_end_a_breach():
    th = metrics.Threshold('q', 'app', 'queue.size', 'max', 100, for_s=2, kind='json')
    assert th.op == '<='
    assert series(th, [(0, 150), (1, None), (2, 150)]) == [2]
    assert th.stats()['missing'] == 1 and th.stats()['samples'] == 2
    assert series(th, [(3, float('nan'))]) == [] and th.missing == 2


def test_for_zero_counts_the_first_unhealthy_sample_and_min_is_ge():
    th = metrics.Threshold('success', 'app', 'ok.ratio', 'min', 0.95, kind='json')
    assert series(th, [(0, 0.99), (1, 0.95), (2, 0.9)]) == [2]
    assert th.episodes[0]['healthy'] == '>= 0.95' and th.episodes[0]['worst'] == 0.9


def test_a_second_breach_after_recovery_is_a_new_episode():
    th = metrics.Threshold('q', 'app', 'queue.size', '<', 10, kind='json')
    assert series(th, [(0, 20), (1, 30), (2, 5), (3, 40)]) == [0, 3]
    assert [e['worst'] for e in th.episodes] == [30, 40]
    assert [e['ongoing'] for e in th.episodes] == [False, True]


def test_a_conditional_breach_warns_and_never_recommends_a_rollback_without_escalate_after():
    th = metrics.Threshold('queue_size', 'app', 'queue.size', '<', 1000, for_s=2, kind='json', severity='conditional')
    # counted at t=3 (unhealthy since 1), and still unhealthy at t=100: observe() never says "roll back"
    assert series(th, [(0, 10), (1, 1200), (3, 1300), (100, 1500)]) == []
    [episode] = th.episodes
    assert episode['severity'] == 'conditional' and episode['escalated'] is False and episode['ongoing'] is True
    assert episode['worst'] == 1500 and episode['lasted_s'] == 99 and episode['escalate_after_s'] is None
    assert not th.recommends_rollback(episode)
    stats = th.stats()
    assert stats['warned'] is True and stats['breached'] is False and stats['severity'] == 'conditional'


def test_a_conditional_breach_escalates_once_it_lasts_escalate_after_from_its_first_unhealthy_sample():
    th = metrics.Threshold('queue_size', 'app', 'queue.size', '<', 1000, for_s=2, kind='json', severity='conditional',
                           escalate_after=10)
    # unhealthy from t=1: counted at 3 (a warning), escalated at 11 (10 s after t=1), once
    assert series(th, [(0, 10), (1, 1200), (3, 1300), (10, 1400), (11, 1450), (12, 1500)]) == [11]
    [episode] = th.episodes
    assert episode['escalated'] is True and th.recommends_rollback(episode) and episode['escalate_after_s'] == 10
    assert th.stats()['breached'] is True and th.stats()['warned'] is False


def test_a_conditional_breach_that_recovers_before_escalate_after_starts_again_from_zero():
    th = metrics.Threshold('q', 'app', 'queue.size', '<', 1000, for_s=0, kind='json', severity='conditional',
                           escalate_after=5)
    assert series(th, [(0, 1200), (4, 1200), (4.5, 10), (5, 1200), (9, 1200), (10, 1200)]) == [10]
    assert [e['escalated'] for e in th.episodes] == [False, True]
    assert th.stats()['warned'] is True and th.stats()['breached'] is True


def test_counter_rates_and_resets():
    page = metrics.parse_prometheus
    th = metrics.Threshold('err', 'prom', 'errors_total', '<', 1, rate=True, kind='prometheus')
    assert th.read(0, page('errors_total 100\n')) is None and th.last_missing_reason == 'first sample of a rate'
    assert th.read(2, page('errors_total 104\n')) == 2.0
    assert th.read(4, page('errors_total 6\n')) == 3.0  # restarted: 6 since the reset


def test_ratio_of_rates_and_zero_traffic():
    page = metrics.parse_prometheus
    th = metrics.Threshold('ratio', 'prom', 'req_total{code=~"5.."}', '<', 0.05, rate=True, divide_by='req_total',
                           kind='prometheus')
    text = '# TYPE req_total counter\nreq_total{code="200"} %d\nreq_total{code="500"} %d\n'
    assert th.read(0, page(text % (100, 0))) is None
    assert th.read(1, page(text % (180, 20))) == pytest.approx(0.2)
    assert th.read(2, page(text % (180, 20))) is None and th.last_missing_reason == '0 / 0'


def test_histogram_rate_gives_the_quantile_of_recent_observations():
    page = metrics.parse_prometheus
    th = metrics.Threshold('p95', 'prom', 'lat', '<', 0.5, rate=True, quantile=0.95, kind='prometheus')
    text = 'lat_bucket{le="0.1"} %d\nlat_bucket{le="1"} %d\nlat_bucket{le="+Inf"} %d\n'
    assert th.read(0, page(text % (1000, 1000, 1000))) is None
    # since the last sample every new request took between 0.1 and 1 s: the cumulative quantile would say 0.1
    assert th.read(1, page(text % (1000, 1100, 1100))) == pytest.approx(0.1 + 0.9 * 0.95)


@pytest.mark.parametrize('kwargs,fragment', [
    (dict(op='=='), 'op must be one of'),
    (dict(for_s=-1), 'for must be 0 or more'),
    (dict(aggregation='median'), 'aggregation must be one of'),
    (dict(quantile=2), 'quantile must be between 0 and 1'),
    (dict(quantile=0.9, kind='json'), 'quantile needs a Prometheus histogram'),
    (dict(metric='a..b', kind='json'), "JSON path 'a..b' cannot be read"),
    (dict(metric='a{', kind='prometheus'), "threshold 'x': metric 'a{'"),
    (dict(severity='later'), "severity must be one of immediate, conditional, not 'later'"),
    (dict(escalate_after=60), 'escalate_after applies to a conditional threshold only'),
    (dict(severity='conditional', for_s=120, escalate_after=60), 'must not be shorter than for (120 s)'),
])
def test_bad_thresholds(kwargs, fragment):
    args = dict(metric='a', op='<', limit=1)
    args.update(kwargs)
    with pytest.raises(metrics.MetricsError) as error:
        metrics.Threshold('x', 'src', **args)
    assert fragment in str(error.value)


def test_describe():
    assert metrics.describe(0.05) == '0.05'
    assert metrics.describe(1500.0) == '1500'
    assert metrics.describe(0.123456) == '0.1235'
    assert metrics.describe(float('inf')) == 'inf'
    assert metrics.describe(None) == '-'
