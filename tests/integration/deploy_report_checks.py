"""What the runbook.deploy.deploy_report callback must have written for a run: shared by the end-to-end tests.

tests/integration/playbooks/test_deploy_playbooks.py enables the callback (as the docs say, through
ANSIBLE_CALLBACKS_ENABLED) in the runs whose report it checks: a successful staging deployment, a failed one rolled
back, and one under ansible-runner. Each scenario runs once and its behaviour and its report are checked on that run,
rather than running the same deployment again for the report.
"""

from __future__ import annotations

import json
import os
import uuid

CALLBACK = 'runbook.deploy.deploy_report'
# Secrets fed through the playbook; none may appear in any output.
HOOK_TOKEN = 'hooktoken' + uuid.uuid4().hex
BEARER = 'bearer-secret-' + uuid.uuid4().hex
EXTRA_PASSWORD = 'pw-secret-' + uuid.uuid4().hex


def read(path):
    with open(path) as handle:
        return handle.read()


def secret_extra_vars(webhook_url):
    """Extra vars that carry secrets: a webhook token, a bearer token in the smoke headers, a password."""
    return {'notify_webhook_url': webhook_url + '/services/T1/B1/' + HOOK_TOKEN,
            'smoke_headers': {'Authorization': 'Bearer ' + BEARER, 'X-Trace': 'report-test'},
            'smoke_bearer_token': BEARER, 'sample_app_admin_password': EXTRA_PASSWORD}


def report_of(entry):
    """The JSON record a history entry points at, checked to sit beside the Markdown and HTML reports."""
    report = entry['report']
    for kind in ('json', 'md', 'html'):
        assert os.path.isfile(report[kind]), report
    return json.loads(read(report['json']))


def check_timeline(record):
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
