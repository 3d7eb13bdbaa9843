"""The notify role's channels (runbook 000: progress to #deployments, failures and rollbacks to #incidents, and the
on-call list by email), against real receivers: two Slack-compatible webhook recorders and the local stack's SMTP
server (aiosmtpd, AUTH required). One ansible-playbook run sends a start and a failure, then a failure while
#incidents is down: the other destinations still get it, and the failure names the channel, never its URL."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import uuid

import yaml

from helpers import REPO, free_port, play_on_localhost

sys.path.insert(0, os.path.join(REPO, 'tests', 'servers'))
from webhook_recorder import WebhookRecorder  # noqa: E402  pylint: disable=wrong-import-position

TOKEN = 'tok%s' % uuid.uuid4().hex[:12]


def _records(recorder):
    if not os.path.exists(recorder.path):
        return []
    with open(recorder.path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _mails(mailbox, since):
    found = []
    for name in sorted((n for n in os.listdir(mailbox) if n.endswith('.eml')), key=lambda n: int(n[:-4])):
        if int(name[:-4]) > since:
            with open(os.path.join(mailbox, name), 'rb') as handle:
                message = email.message_from_binary_file(handle, policy=email.policy.default)
            with open(os.path.join(mailbox, name[:-4] + '.json')) as handle:
                found.append((json.load(handle), message))
    return found


def test_each_event_reaches_the_channels_that_hear_it_and_an_outage_spares_the_others(stack, tmp_path):
    chat = WebhookRecorder(str(tmp_path / 'chat.jsonl')).start()
    incidents = WebhookRecorder(str(tmp_path / 'incidents.jsonl')).start()
    mailbox = stack['RUNBOOK_SMTP_MAILBOX']
    before = len([n for n in os.listdir(mailbox) if n.endswith('.eml')]) if os.path.isdir(mailbox) else 0
    channels = [
        {'name': 'deployments', 'url': '%s/services/T0/B1/%s' % (chat.url, TOKEN), 'channel': '#deployments',
         'events': ['start', 'success', 'warning']},
        {'name': 'incidents', 'url': '%s/services/T0/B2/%s' % (incidents.url, TOKEN), 'channel': '#incidents',
         'events': ['failure', 'rollback']},
        {'name': 'oncall', 'type': 'email', 'to': ['oncall@example.test', 'lead@example.test'],
         'events': ['failure', 'rollback']},
        {'name': 'audit', 'type': 'webhook', 'url': '%s/audit/%s' % (chat.url, TOKEN)},
    ]
    down = [dict(c, url='http://127.0.0.1:%d/services/T0/B2/%s' % (free_port(), TOKEN)) if c['name'] == 'incidents'
            else c for c in channels]
    common = {'notify_smtp_host': stack['RUNBOOK_SMTP_HOST'], 'notify_smtp_port': int(stack['RUNBOOK_SMTP_PORT']),
              'notify_smtp_username': stack['RUNBOOK_SMTP_USER'], 'notify_smtp_password': stack['RUNBOOK_SMTP_PASSWORD'],
              'notify_smtp_secure': 'never', 'notify_email_from': 'runbook.deploy <deploy@example.test>',
              'notify_delegate_to': 'localhost', 'notify_timeout': 5,
              'notify_context': {'app': 'pfa-backend', 'environment': 'production', 'version': 'v4.0.0',
                                 'reason': 'smoke test /health failed'}}
    runs = [('start', channels), ('failure', channels), ('failure', down)]
    tasks = []
    for index, (event, destinations) in enumerate(runs):
        tasks += [
            {'name': 'Send %s (%d)' % (event, index), 'ansible.builtin.include_role': {'name': 'runbook.deploy.notify'},
             'vars': {'notify_event': event, 'notify_channels': destinations}},
            {'name': 'Keep notify_last (%d)' % index, 'ansible.builtin.copy': {
                'dest': str(tmp_path / ('last%d.json' % index)), 'mode': '0600', 'content': '{{ notify_last | to_json }}'}},
        ]
    playbook = tmp_path / 'notify.yml'
    playbook.write_text(yaml.safe_dump([{'name': 'Notify', 'hosts': 'localhost', 'gather_facts': False, 'vars': common,
                                         'tasks': tasks}], sort_keys=False))
    try:
        run = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                              str(playbook)], capture_output=True, text=True, check=False, timeout=300,
                             env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO, '.venv', 'bin', 'python')))
    finally:
        chat.stop()
        incidents.stop()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    for secret in (TOKEN, stack['RUNBOOK_SMTP_PASSWORD']):
        assert secret not in output, 'a credential in the output'
    last = []
    for index in range(3):
        with open(tmp_path / ('last%d.json' % index)) as handle:
            last.append(json.load(handle))

    # start: #deployments (Slack, its channel) and the audit webhook (every event); not #incidents, no email.
    assert last[0]['status'] == 'sent' and [d['name'] for d in last[0]['destinations']] == ['deployments', 'audit']
    # failure: #incidents, the audit webhook and the on-call email.
    assert last[1]['status'] == 'sent', last[1]
    assert [d['name'] for d in last[1]['destinations']] == ['incidents', 'audit', 'oncall']
    chat_records = _records(chat)
    slack = [r for r in chat_records if 'attachments' in r or 'text' in r and 'event' not in r]
    audit = [r for r in chat_records if 'event' in r]
    assert [r['channel'] for r in slack] == ['#deployments'] and slack[0]['text'].startswith('Deployment starting')
    assert [r['event'] for r in audit] == ['start', 'failure', 'failure']
    assert audit[1]['headline'] == 'Deployment FAILED: pfa-backend v4.0.0 to production'
    assert 'Deployment Status: FAILED' in audit[1]['text'] and audit[1]['context']['version'] == 'v4.0.0'
    incident_records = _records(incidents)
    assert [r['channel'] for r in incident_records] == ['#incidents']
    assert incident_records[0]['text'] == 'Deployment FAILED: pfa-backend v4.0.0 to production'

    # Two failure emails (the outage spared the email), with the runbook's wording, through AUTH.
    mails = _mails(mailbox, before)
    assert len(mails) == 2, mails
    envelope, message = mails[0]
    assert sorted(envelope['to']) == ['lead@example.test', 'oncall@example.test']
    assert message['Subject'] == 'Deployment FAILED: pfa-backend v4.0.0 to production'
    assert 'deploy@example.test' in message['From']
    body = message.get_body(('plain',)).get_content()
    assert 'Deployment Status: FAILED' in body and 'Reason: smoke test /health failed' in body

    # #incidents down: the others got it, notify_last says which did not and why, without its URL or token.
    assert last[2]['status'] == 'failed' and not last[2]['sent']
    outcome = {d['name']: d for d in last[2]['destinations']}
    assert outcome['audit']['sent'] and outcome['oncall']['sent'] and not outcome['incidents']['sent']
    assert 'webhook could not be reached' in outcome['incidents']['error'], outcome
    assert TOKEN not in json.dumps(last[2]) and 'WARNING: the failure notification was not delivered' in output


def test_the_deployments_messages_carry_its_expected_duration_downtime_and_links(tmp_path):
    """Runbook 002's start message ("Expected duration / Expected downtime / Monitoring: [DASHBOARD_URL]") from the
    deployment role's own variables, as the playbooks send it (tasks_from: notify)."""
    audit = WebhookRecorder(str(tmp_path / 'audit.jsonl')).start()
    tasks = [{'name': 'Start message', 'ansible.builtin.include_role': {
        'name': 'runbook.deploy.deployment', 'tasks_from': 'notify'}, 'vars': {'deployment_notify_event': 'start'}}]
    play = {'name': 'Notify', 'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks, 'vars': {
        'runbook_environment': 'production', 'runbook_version': 'v3.0.0', 'notify_delegate_to': 'localhost',
        'notify_channels': [{'name': 'audit', 'type': 'webhook', 'url': '%s/audit/%s' % (audit.url, TOKEN)}],
        'deployment_expected_duration': '45 minutes', 'deployment_expected_downtime': 'None (rolling deployment)',
        'deployment_links': {'Monitoring': 'https://grafana.example.test/d/deployments'}}}
    try:
        rc, output = play_on_localhost(tmp_path, [play], name='notify.yml', env=dict(
            os.environ, ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO, '.venv', 'bin', 'python')))
    finally:
        audit.stop()
    assert rc == 0, output[-5000:]
    [record] = _records(audit)
    assert record['event'] == 'start'
    for line in ('Expected duration: 45 minutes', 'Expected downtime: None (rolling deployment)',
                 'Monitoring: https://grafana.example.test/d/deployments'):
        assert line in record['text'].splitlines(), record['text']
