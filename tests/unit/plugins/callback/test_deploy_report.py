"""Sanitising, timeline and rendering of the deploy_report callback (plugins/callback/deploy_report.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.runbook.deploy.plugins.callback import deploy_report as report

START = 1790000000.0


def _phase(start, end=None, status='ok'):
    phase = {'start_epoch': START + start, 'status': 'running' if end is None else status}
    if end is not None:
        phase.update(end_epoch=START + end, duration_s=round(end - start, 2))
    return phase


PHASES = {'build': _phase(5, 20), 'database': _phase(20.5, 40), 'backends': _phase(41, 60, 'failed'),
          'rollback': _phase(61, 70)}


def _record(**entry):
    history = dict({'environment': 'staging', 'version': 'v2', 'run_id': 'r1', 'kind': 'deploy', 'status': 'rolled_back',
                    'previous_version': 'v1', 'running_version': 'v1', 'actor': 'dana', 'approved_by': '',
                    'hosts': ['app1'], 'started_at': '2026-09-21T12:53:20Z', 'duration_s': 75.0, 'phases': PHASES,
                    'failure': {'phase': 'backends', 'host': 'app1', 'message': 'app1: cases API failed'},
                    'backup': {'path': '/b/x.dump', 'size': 10, 'sha256': 'ab', 's3_uri': 's3://b/x.dump'},
                    'migrations': ['m1']}, **entry)
    facts = {'runbook_run_id': 'r1', 'runbook_started_epoch': str(START), 'deployment_history_entry': history,
             'rollback_result': {'backend': {'to': 'v1'}}, 'migrate_result': {'applied': ['m1'], 'tool': 'prisma'}}
    tasks = [{'host': 'app1', 'play': 'P', 'task': 'Switch release', 'action': 'ansible.builtin.file', 'status': 'ok',
              'changed': True, 'duration_s': 1.5},
             {'host': 'app1', 'play': 'P', 'task': 'Look', 'action': 'ansible.builtin.stat', 'status': 'ok',
              'changed': False, 'duration_s': 0.1}]
    smoke = [{'host': 'app1', 'phase': 'backends', 'summary': {'total': 4, 'passed': 3, 'failed': 1, 'skipped': 0},
              'checks': [{'name': 'health', 'passed': True}, {'name': 'cases API', 'passed': False}]},
             {'host': 'app1', 'phase': 'rollback', 'summary': {'total': 4, 'passed': 4, 'failed': 0, 'skipped': 0},
              'checks': [{'name': 'health', 'passed': True}, {'name': 'cases API', 'passed': True}]}]
    return report.build_record(facts, tasks, smoke, {'playbook': 'deploy_staging.yml'})


@pytest.mark.parametrize('key', ['password', 'login_password', 'DB_PASSWD', 'api_token', 'Authorization', 'client_secret',
                                 'notify_webhook_url', 'aws_secret_access_key', 'database_url', 'apiKey', 'private_key'])
def test_secret_keys_are_dropped(key):
    assert report.sanitize({key: 'x', 'name': 'kept'}) == {'name': 'kept'}


@pytest.mark.parametrize('text,secret', [
    ('postgresql://app:s3cr3t-pw@db:5432/app', 's3cr3t-pw'),
    ('https://user:hunter22@example.com/x', 'hunter22'),
    ('https://hooks.example.com/services/T000/B000/abcdefTOKEN', 'abcdefTOKEN'),
    ('GET https://api/x?access_token=tok123456&page=2', 'tok123456'),
    ('header Authorization: Bearer eyJhbGciOi.abc.def', 'eyJhbGciOi.abc.def'),
    ('slack xoxb-1234-5678-abcdef', 'xoxb-1234-5678-abcdef'),
    ('key AKIAABCDEFGHIJKLMNOP here', 'AKIAABCDEFGHIJKLMNOP'),
])
def test_secret_values_are_scrubbed(text, secret):
    cleaned = report.sanitize({'message': text, 'list': [text]})
    assert secret not in json.dumps(cleaned)
    assert report.REDACTED in cleaned['message']


def test_known_secret_values_are_scrubbed_anywhere():
    secrets = report.secret_values({'RUNBOOK_PG_PASSWORD': 'pg-Pass-99', 'HOME': '/root', 'MY_TOKEN': 'short',
                                    'API_KEY': '{{ vault_key }}'})
    assert secrets == {'pg-Pass-99'}
    cleaned = report.sanitize({'failure': {'message': 'login failed for pg-Pass-99'}}, secrets)
    assert cleaned == {'failure': {'message': 'login failed for ***'}}


def test_ordinary_values_are_kept():
    value = {'version': 'v1.2.3', 'url': 'http://127.0.0.1:8080/health', 'sha256': 'a' * 64, 'count': 3,
             'ok': True, 'none': None, 'checks': [{'name': 'token list page', 'passed': True}]}
    assert report.sanitize(value) == value


def test_timeline_is_contiguous_and_adds_up():
    phases = report.timeline(PHASES, START, 75.0)
    assert [p['name'] for p in phases] == ['check', 'build', 'database', 'backends', 'rollback', 'finish']
    assert phases[0] == {'name': 'check', 'start_s': 0.0, 'end_s': 5.0, 'duration_s': 5.0, 'status': 'ok', 'recorded': False}
    assert phases[-1]['start_s'] == 70.0 and phases[-1]['end_s'] == 75.0
    gaps = sum(b['start_s'] - a['end_s'] for a, b in zip(phases, phases[1:]))
    assert sum(p['duration_s'] for p in phases) + gaps == pytest.approx(75.0)


def test_an_unclosed_phase_ends_where_the_next_begins():
    phases = report.timeline({'build': _phase(2, 10), 'database': _phase(10.5)}, START, 30.0)
    database = [p for p in phases if p['name'] == 'database'][0]
    assert database['status'] == 'unfinished' and database['end_s'] == 30.0


def test_record_fills_in_the_runbook_log():
    record = _record()
    assert record['status'] == 'rolled_back' and record['rollback']['taken'] is True
    assert record['rollback']['why'] == 'app1: cases API failed' and record['rollback']['result'] == {'backend': {'to': 'v1'}}
    assert record['smoke']['success_rate'] == 75.0 and record['smoke']['hosts']['app1']['failed_checks'] == ['cases API']
    # The rollback's own smoke test is kept apart from the deployment's.
    assert record['rollback']['smoke']['success_rate'] == 100.0 and record['rollback']['smoke']['passed'] is True
    assert record['changed'] == [{'host': 'app1', 'play': 'P', 'task': 'Switch release', 'action': 'ansible.builtin.file'}]
    items = dict(report.checklist(record))
    assert items['Total deployment time'] == '1 min 15 s' and items['Smoke test success rate'] == '75.0%'
    assert items['Rollback required'] == 'yes: app1: cases API failed'
    json.dumps(record)


def test_record_never_carries_a_secret_from_the_facts():
    record = _record(failure={'phase': 'release', 'host': 'app1',
                              'message': 'POST https://hooks/services/T1/B2/SECRETXYZ failed; db postgres://u:pw123456@h/d'})
    text = json.dumps(record)
    assert 'SECRETXYZ' not in text and 'pw123456' not in text


def test_markdown_and_html_show_the_log_and_the_timeline():
    record = _record()
    markdown = report.render_markdown(record)
    assert '| Smoke test success rate | 75.0% |' in markdown
    assert '| backends | 41.0 | 60.0 | 19.0 s | failed |' in markdown
    assert '| S3 | s3://b/x.dump |' in markdown
    page = report.render_html(record)
    assert page.startswith('<!DOCTYPE html>') and page.count('class="row"') == 6
    assert 'bar failed' in page and 'bar rollback' in page and 'bar derived' in page
    for fragment in ('<script', '<link', 'src=', 'url('):
        assert fragment not in page


def test_every_section_is_a_table_a_person_reads():
    """The lower half of the page used to be raw JSON: ~6,000 px of it, with floats like 0.041249999999999."""
    record = _record()
    record['watch'] = {'decision': 'keep', 'duration_s': 300.0, 'samples': 60, 'breaches': [],
                       'thresholds': {'error_rate': {'metric': 'http_requests_total{status=~"5.."}', 'op': '<',
                                                     'limit': 0.05, 'last': 0.041249999999999, 'max': 0.0431234,
                                                     'samples': 60, 'breached': False}}}
    record['preflight'] = {'database': {'ok': True, 'detail': 'PostgreSQL 15'}, 'problems': [], 'warnings': ['disk 71% full']}
    page = report.render_html(record)
    markdown = report.render_markdown(record)
    assert '<pre>' not in page and '```' not in markdown
    assert '0.041249999999999' not in page and '<td>0.04125</td>' in page
    assert '| error_rate | http_requests_total{status=~"5.."} | < 0.05 | 0.04125 | 0.04312 | 60 | immediate | no |' in markdown
    assert '<td>database</td><td>ok</td><td>PostgreSQL 15</td>' in page and 'disk 71% full' in page


def test_the_watch_window_tells_a_conditional_breach_from_a_rollback_one():
    record = _record()
    record['watch'] = {'decision': 'monitor', 'duration_s': 300.0, 'samples': 31, 'breaches': [],
                       'conditional_breaches': [{'threshold': 'queue_size'}],
                       'thresholds': {'queue_size': {'metric': 'queue.size', 'op': '<', 'limit': 1000, 'last': 1450,
                                                     'max': 1480, 'samples': 31, 'severity': 'conditional',
                                                     'breached': False, 'warned': True},
                                      'error_rate': {'metric': 'errors.rate', 'op': '<', 'limit': 0.05, 'last': 0.2,
                                                     'max': 0.2, 'samples': 31, 'severity': 'immediate',
                                                     'breached': True, 'warned': False}}}
    markdown = report.render_markdown(record)
    assert 'Decision: monitor after 5 min 00 s and 31 sample(s); 0 breach(es), 1 conditional (monitor, no rollback).' in markdown
    assert '| queue_size | queue.size | < 1000 | 1450 | 1480 | 31 | conditional | conditional (monitor) |' in markdown
    assert '| error_rate | errors.rate | < 0.05 | 0.2 | 0.2 | 31 | immediate | yes (rollback) |' in markdown


def test_the_report_says_whether_the_site_served_the_build():
    record = _record()
    record['frontend_verified'] = {'url': 'https://app.example.com/', 'version': 'v2', 'serves_build': False,
                                   'status': 200}
    markdown = report.render_markdown(record)
    assert '## Frontend as visitors get it' in markdown
    assert '| URL | https://app.example.com/ |' in markdown and '| Serves that build | no |' in markdown


def test_every_sign_off_is_in_the_report():
    record = _record()
    record['approved_by'] = 'Dana (Product Owner), Lee (Tech Lead)'
    record['approvals'] = [{'role': 'Product Owner', 'name': 'Dana'}, {'role': 'Tech Lead', 'name': 'Lee'}]
    markdown = report.render_markdown(record)
    assert '| Approved by | Dana (Product Owner), Lee (Tech Lead) |' in markdown
    assert '## Sign-offs' in markdown and '| Product Owner | Dana |' in markdown and '| Tech Lead | Lee |' in markdown
    assert '<td>Tech Lead</td><td>Lee</td>' in report.render_html(record)


def test_a_check_runs_report_says_it_is_a_check_and_shows_the_predictions():
    record = _record()
    record.update(status='checked', check_mode=True, failure=None, changes={
        'built': ['app1'], 'backup': {'db': 'app', 'reused': False, 's3': True}, 'migrations': ['20261201_add'],
        'apps': {'app1': {'api': 'reload'}}, 'frontend': {'uploaded': ['index.html'], 'deleted': []},
        'flags': {'dash': {'before': {'enabled': False, 'rollout_percentage': None},
                           'after': {'enabled': True, 'rollout_percentage': 100}}}})
    page = report.render_html(record)
    title = page.split('<h1>')[1].split('</h1>')[0]
    assert 'Check run: Deploy of v2 to staging' in title and 'succeeded' not in title
    assert 'nothing was changed' in page and '<h2>What this run would change</h2>' in page
    assert '<td>Flag dash</td><td>off -&gt; on at 100 %</td>' in page
    markdown = report.render_markdown(record)
    assert markdown.startswith('# Check run: Deploy of v2 to staging: checked')
    assert '| Migrations | 20261201_add |' in markdown and '| Apps on app1 | api: reload |' in markdown


def test_html_escapes_what_the_run_says():
    record = _record(failure={'phase': 'backends', 'host': 'app1', 'message': '<script>alert(1)</script>'})
    page = report.render_html(record)
    assert '<script>' not in page and '&lt;script&gt;' in page


def test_a_flag_rollouts_health_gate_is_not_counted_as_the_smoke_test():
    """The rollout's health gate (smoke_test run by the flags role after the smoke test) used to be each host's last
    smoke_test result: the report then showed its 1 check of 1 instead of the smoke test's 3."""
    history = {'environment': 'staging', 'version': 'v2', 'run_id': 'r1', 'kind': 'deploy', 'status': 'succeeded',
               'hosts': ['app1', 'app2'], 'duration_s': 75.0,
               'phases': {'backends': _phase(41, 60), 'release': _phase(61, 70)}}
    facts = {'runbook_run_id': 'r1', 'runbook_started_epoch': str(START), 'deployment_history_entry': history}
    three = {'summary': {'total': 3, 'passed': 3, 'failed': 0, 'skipped': 0},
             'checks': [{'name': n, 'passed': True} for n in ('health', 'cases API', 'metrics')]}
    gate = {'summary': {'total': 1, 'passed': 1, 'failed': 0, 'skipped': 0}, 'checks': [{'name': 'health', 'passed': True}]}
    smoke = [dict(three, host='app1', phase='backends', role='runbook.deploy.smoke'),
             dict(three, host='app2', phase='backends', role='runbook.deploy.smoke'),
             dict(gate, host='app1', phase='release', role='runbook.deploy.flags'),
             dict(gate, host='app1', phase='release', role='runbook.deploy.flags')]
    record = report.build_record(facts, [], smoke, {'playbook': 'deploy_staging.yml'})
    assert (record['smoke']['checks_passed'], record['smoke']['checks_counted']) == (6, 6), record['smoke']
    assert record['smoke']['hosts']['app1']['counted'] == 3
    assert record['rollout_health_checks']['checks_counted'] == 1 and record['rollout_health_checks']['passed'] is True


def test_the_log_names_the_ticket_and_an_ad_hoc_rollback_for_what_it_is():
    items = dict(report.checklist(_record(ticket='CHG-1234')))
    assert items['Change ticket'] == 'CHG-1234'
    # The ad-hoc rollback's own report used to say "Rollback required: yes: see failure", with no failure to see.
    items = dict(report.checklist(_record(kind='rollback', status='succeeded', failure=None)))
    assert items['Rollback required'] == 'this run is the ad-hoc rollback (playbooks/rollback.yml)'
    assert items['Change ticket'] == '(none)'
