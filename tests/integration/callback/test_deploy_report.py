"""End to end: the runbook.deploy.deploy_report callback on real runs of playbooks/deploy_staging.yml.

Same set-up as tests/integration/playbooks/test_deploy_playbooks.py (its Env and make_env): the sample application on
the local stack, one environment per test. The callback is enabled the way the docs say (ANSIBLE_CALLBACKS_ENABLED).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import pytest

from helpers import REPO

sys.path.insert(0, os.path.join(REPO, 'tests', 'integration', 'playbooks'))
# The fixtures and helpers of the playbook tests (importing names does not collect their tests here).
from test_deploy_playbooks import SECRET_TOKEN, _drop_bucket, _s3, make_env, webhook  # noqa: E402,F401 pylint: disable=unused-import

pytestmark = pytest.mark.slow

CALLBACK = 'runbook.deploy.deploy_report'
# Secrets fed through the playbook; none may appear in any output.
HOOK_TOKEN = 'hooktoken' + uuid.uuid4().hex
BEARER = 'bearer-secret-' + uuid.uuid4().hex
EXTRA_PASSWORD = 'pw-secret-' + uuid.uuid4().hex


@pytest.fixture(autouse=True)
def callback_enabled(monkeypatch):
    monkeypatch.setenv('ANSIBLE_CALLBACKS_ENABLED', CALLBACK)


@pytest.fixture
def history_bucket(stack):
    bucket = 'deploy-report-' + uuid.uuid4().hex[:8]
    _s3(stack).create_bucket(Bucket=bucket)
    yield {'deployment_history_s3_bucket': bucket, 'deployment_history_s3_prefix': 'runbook/history',
           'deployment_history_s3_endpoint_url': stack['RUNBOOK_S3_ENDPOINT_URL'],
           'deployment_history_s3_region': 'us-east-1'}
    _drop_bucket(stack, bucket)


def _read(path):
    with open(path) as handle:
        return handle.read()


def _report(entry):
    """The JSON record the history entry points at, checked to sit beside the Markdown and HTML reports."""
    report = entry['report']
    for kind in ('json', 'md', 'html'):
        assert os.path.isfile(report[kind]), report
    return json.loads(_read(report['json']))


def _check_timeline(record):
    """Phases follow each other with small gaps, and their durations plus the gaps add up to the run's duration."""
    phases = record['timeline']
    assert phases[0]['name'] == 'check' and phases[0]['start_s'] == 0 and phases[-1]['name'] == 'finish', phases
    recorded = [p for p in phases if p['recorded']]
    gaps = [max(0.0, b['start_s'] - a['end_s']) for a, b in zip(recorded, recorded[1:])]
    assert all(gap < 3.0 for gap in gaps), (gaps, phases)
    total = sum(p['duration_s'] for p in phases) + sum(gaps)
    assert abs(total - record['duration_s']) < 1.0, (total, record['duration_s'], phases)
    # Each recorded phase is the history's own numbers.
    for phase in recorded:
        assert abs(phase['duration_s'] - record['phases'][phase['name']].get('duration_s', phase['duration_s'])) < 0.05


def test_a_deploy_writes_its_report_with_numbers_that_add_up_and_no_secret(make_env, history_bucket, stack):
    env = make_env()
    secrets = {'notify_webhook_url': env.webhook.url + '/services/T1/B1/' + HOOK_TOKEN,
               'smoke_headers': {'Authorization': 'Bearer ' + BEARER, 'X-Trace': 'report-test'},
               'smoke_bearer_token': BEARER, 'sample_app_admin_password': EXTRA_PASSWORD}
    began = time.monotonic()
    result = env.play('deploy_staging.yml', runbook_version='v1.0.0', **dict(history_bucket, **secrets))
    elapsed = time.monotonic() - began
    assert result.rc == 0, result

    entry = env.history()[-1]
    record = _report(entry)
    assert record['status'] == 'succeeded' and record['version'] == 'v1.0.0' and record['environment'] == env.name
    assert record['run_id'] == entry['run_id'] and record['hosts'] == ['app1'] and record['previous_version'] == ''
    _check_timeline(record)
    # The record's duration is the run's. The test's clock also counts ansible-playbook's start-up, fact gathering
    # before the run record starts, and the report upload and exit after it ends: about 20 s here, but those grow with
    # the machine's load like everything else (45 s of 411 s in a CI run at load 12), so the allowance is a share.
    assert elapsed - max(20, 0.15 * elapsed) < record['duration_s'] <= elapsed, (record['duration_s'], elapsed)
    assert [p['name'] for p in record['timeline']] == ['check', 'build', 'database', 'backends', 'release', 'finish']
    # The runbook's numbers: backup, migrations, smoke tests, watch window, what changed.
    assert record['backup']['s3_uri'] == entry['backup']['s3_uri'] and record['backup']['sha256']
    assert record['migrations']['applied'] == entry['migrations'] and len(entry['migrations']) >= 2, record['migrations']
    assert record['smoke']['passed'] is True and record['smoke']['success_rate'] == 100.0, record['smoke']
    assert record['watch'], record
    assert record['rollback']['taken'] is False and record['failure'] is None
    assert any(c['task'].startswith('runbook.deploy.backend') or 'release' in c['task'].lower() for c in record['changed'])
    markdown, page = _read(entry['report']['md']), _read(entry['report']['html'])
    assert '| Total deployment time |' in markdown and '| Rollback required | no |' in markdown
    # Self-contained: no scripts, stylesheets, images or fonts from anywhere.
    for fragment in ('<script', '<link', '<img', 'src=', 'url(', '@import'):
        assert fragment not in page, fragment
    assert page.count('class="row"') == 6 and '<style>' in page
    # Uploaded beside the history in S3, and the history points at them.
    client = _s3(stack)
    bucket = history_bucket['deployment_history_s3_bucket']
    base = 'runbook/history/reports/%s/%s' % (env.name, entry['run_id'])
    assert entry['report']['s3_uri'] == 's3://%s/%s.html' % (bucket, base)
    uploaded = {kind: client.get_object(Bucket=bucket, Key='%s.%s' % (base, kind))['Body'].read().decode()
                for kind in ('json', 'md', 'html')}
    assert json.loads(uploaded['json']) == record
    history_copy = client.get_object(Bucket=bucket, Key='runbook/history/%s.jsonl' % env.name)['Body'].read().decode()

    # No secret anywhere: the run's output, the three reports, the history, the S3 copies.
    outputs = {'stdout': result.output, 'json': _read(entry['report']['json']), 'md': markdown, 'html': page,
               'history': _read(os.path.join(env.root, 'history', env.name + '.jsonl')), 'history-s3': history_copy}
    outputs.update(('s3-' + kind, text) for kind, text in uploaded.items())
    for name, text in outputs.items():
        for secret in (HOOK_TOKEN, BEARER, EXTRA_PASSWORD, SECRET_TOKEN, stack['RUNBOOK_PG_PASSWORD'],
                       stack['AWS_SECRET_ACCESS_KEY']):
            assert secret not in text, (name, secret)


def test_a_failed_deploy_records_the_failure_and_the_rollback(make_env):
    env = make_env()
    assert env.play('deploy_staging.yml', runbook_version='v1.0.0').rc == 0
    broken = env.play('deploy_staging.yml', runbook_version='v1.1.0', sample_app_fault='smoke')
    assert broken.rc != 0, broken
    entry = env.history()[-1]
    assert entry['status'] == 'rolled_back', entry
    record = _report(entry)
    assert record['run_id'] == entry['run_id'] and record['status'] == 'rolled_back'
    assert record['previous_version'] == 'v1.0.0' and record['running_version'] == 'v1.0.0'
    assert record['failure']['phase'] == 'backends' and 'cases API' in record['failure']['message'], record['failure']
    assert record['rollback']['taken'] is True and record['rollback']['status'] == 'ok', record['rollback']
    assert 'cases API' in record['rollback']['why'] and record['rollback']['result'], record['rollback']
    assert record['smoke']['passed'] is False and record['smoke']['success_rate'] < 100, record['smoke']
    assert record['smoke']['hosts']['app1']['failed_checks'] == ['cases API reads the database'], record['smoke']
    # The rollback smoke-tested what it went back to: its result is kept apart.
    assert record['rollback']['smoke']['passed'] is True, record['rollback']
    names = [p['name'] for p in record['timeline']]
    assert names == ['check', 'build', 'database', 'backends', 'rollback', 'finish'], record['timeline']
    # The backends phase failed; when the history has no end for it, the timeline ends it where the rollback begins.
    print('PHASES', json.dumps(entry['phases'], sort_keys=True))
    assert {p['name']: p['status'] for p in record['timeline']}['backends'] in ('failed', 'unfinished'), record['timeline']
    _check_timeline(record)
    markdown = _read(entry['report']['md'])
    assert '| Rollback required | yes: app1:' in markdown and '## Failure' in markdown
    # The first deploy has its own report; the two never share a file.
    assert env.history()[0]['report']['json'] != entry['report']['json']
    assert os.path.isfile(env.history()[0]['report']['json'])


def test_the_report_is_the_same_under_ansible_runner(make_env, tmp_path):
    import ansible_runner

    env = make_env()
    private = tmp_path / 'runner'
    private.mkdir()
    os.environ.update({k: v for k, v in env.env().items() if k.startswith(('RUNBOOK_', 'AWS_', 'ANSIBLE_'))})
    # As AWX passes them: the job id and the launching user as extra vars.
    extravars = dict(env.extra, runbook_version='v1.0.0', awx_job_id=4242, awx_user_name='dana')
    run = ansible_runner.run(private_data_dir=str(private), playbook=os.path.join(REPO, 'playbooks', 'deploy_staging.yml'),
                             inventory=env.inventory, extravars=extravars, quiet=True,
                             envvars={'RUNBOOK_REPO': REPO, 'ANSIBLE_CALLBACKS_ENABLED': CALLBACK})
    assert run.status == 'successful' and run.rc == 0, run.stdout.read()[-6000:]
    entry = env.history()[-1]
    assert entry['run_id'] == '4242' and entry['actor'] == 'dana', entry
    record = _report(entry)
    assert record['status'] == 'succeeded' and record['run_id'] == '4242' and record['actor'] == 'dana'
    _check_timeline(record)
    assert record['report']['json'].endswith('/reports/%s/4242.json' % env.name)
