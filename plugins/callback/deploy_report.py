# -*- coding: utf-8 -*-
# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_report
type: aggregate
short_description: The deployment record of every run of the runbook.deploy playbooks (JSON, Markdown, HTML)
description:
  - Watches a run of C(deploy_staging.yml), C(deploy_production.yml) or C(rollback.yml) and, when it ends, writes the
    filled-in deployment log the runbooks ask for by hand. Environment, versions before and after, who approved, each
    phase's start, end and duration, what changed (every changed task per host), the backup taken, the migrations
    applied, the smoke test results, the watch window's numbers, and whether the run rolled back and why.
  - One JSON record, one Markdown report and one self-contained HTML page (inline CSS, a timeline of the phases, no
    external assets) per run, in C(<deployment_history_dir>/reports/<environment>/<run_id>.{json,md,html}), and in the
    history's S3 bucket under C(<deployment_history_s3_prefix>/reports/<environment>/) when the history is mirrored to S3.
  - The history line the C(runbook.deploy.deployment) role appends for the run gets a C(report) field with those
    paths. The history stays the one record that the production gate and the rollback playbook read; the report adds
    the details.
  - Reads only what the playbooks publish (C(set_fact) results such as C(deployment_phases), C(backup_taken),
    C(migrate_result), C(watch_result), C(rollback_result); the C(smoke_test) module's summary) and each task's
    timing and changed status. Results of C(no_log) tasks arrive censored and are not read. Keys that name secrets
    (password, token, secret, webhook, authorization...) are dropped, credentials in URLs, bearer tokens and the values
    of the controller's secret-looking environment variables and extra vars are replaced by C(***).
  - Runs of other playbooks (no C(runbook_run_id)) are ignored. Writing or uploading a report never fails a run; a
    problem is shown as a warning.
  - Enable it with C(ANSIBLE_CALLBACKS_ENABLED=runbook.deploy.deploy_report) (or C(callbacks_enabled) in an
    C(ansible.cfg)); a playbook cannot enable a callback itself.
version_added: 0.1.0
requirements:
  - boto3 (only to upload the reports to S3)
options:
  output_dir:
    description:
      - Where to write the report of a run that stopped before its history record (refused by a gate, the lock or the
        pre-flight checks), as C(<output_dir>/<environment>/<run_id>.*).
      - Runs that reach the record always write beside the history, where its C(report) field points.
      - Unset, such runs leave no report (the run's own output says why it stopped).
    type: path
    env:
      - name: RUNBOOK_DEPLOY_REPORT_DIR
    ini:
      - section: runbook_deploy_report
        key: output_dir
  upload:
    description:
      - Upload the reports to the history's S3 bucket (C(deployment_history_s3_bucket)) when it has one.
    type: bool
    default: true
    env:
      - name: RUNBOOK_DEPLOY_REPORT_UPLOAD
    ini:
      - section: runbook_deploy_report
        key: upload
  redact:
    description:
      - More values never to write (besides the secrets found by key name, URL credentials and bearer tokens).
    type: list
    elements: str
    default: []
    env:
      - name: RUNBOOK_DEPLOY_REPORT_REDACT
    ini:
      - section: runbook_deploy_report
        key: redact
"""

import datetime
import html
import json
import os
import re
import time

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.callback import CallbackBase

from ansible_collections.runbook.deploy.plugins.plugin_utils import human

try:
    import boto3
    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False

SCHEMA = 1
REDACTED = '***'

# Facts the playbooks publish that the report reads (the last value set wins).
FACTS = ('runbook_run_id', 'runbook_started_epoch', 'runbook_kind', 'runbook_already_deployed', 'deployment_phases',
         'deployment_outcome', 'deployment_run_failure', 'deployment_previous_version', 'deployment_history_entry',
         'deployment_report', 'backup_taken', 'migrate_result', 'watch_result', 'rollback_result', 'preflight_report',
         'flags_changed', 'frontend_verified', 'deployment_hooks_run')
SMOKE_ACTIONS = ('runbook.deploy.smoke_test', 'smoke_test')
# The phases a run marks, in the runbook's order; the report adds 'check' (before the first) and 'finish' (after the last).
PHASE_ORDER = ('check', 'adopt', 'build', 'database', 'backends', 'release', 'rollback', 'finish')

SECRET_KEY = re.compile(r'(?i)(passw(or)?d|passwd|secret|token|api[_-]?key|authori[sz]ation|credential|private[_-]?key|'
                        r'cookie|webhook|bearer|dsn|connection[_-]?string|database[_-]?url|db[_-]?url|access[_-]?key)')
_VALUE_PATTERNS = (
    # scheme://user:password@host -> scheme://***@host
    (re.compile(r'(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@"\'<>]+@'), r'\1' + REDACTED + '@'),
    # ?token=...&key=... in URLs
    (re.compile(r'(?i)([?&;](?:[a-z_]*token|[a-z_]*key|secret|password|passwd|sig|signature|auth)=)[^&;\s"\'<>]+'),
     r'\1' + REDACTED),
    # Authorization: Bearer abc / Basic abc / token abc
    (re.compile(r'(?i)\b(bearer|basic|token)(\s+|:\s*)[A-Za-z0-9._~+/=-]{6,}'), r'\1\2' + REDACTED),
    # Slack-style webhook paths (the token is the path)
    (re.compile(r'(/services/)[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+'), r'\1' + REDACTED),
    # Well-known token shapes
    (re.compile(r'\b(xox[abposr]-[A-Za-z0-9-]+|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,})'),
     REDACTED),
    (re.compile(r'-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----', re.S), REDACTED),
)


def plain(value):
    """JSON-able copy of value: mappings, lists, str, numbers, bools, None (tagged or lazy values become plain)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (str, bytes)):
        return to_text(value, errors='surrogate_or_replace')
    if hasattr(value, 'items'):
        return {to_text(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return to_text(value)


def is_secret_key(key):
    return bool(SECRET_KEY.search(to_text(key)))


def scrub_text(text, secrets=()):
    """text with every known secret value, URL credential, bearer token and token-shaped string replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def sanitize(value, secrets=()):
    """A plain copy of value without secrets: keys that name one are dropped, strings are scrubbed (scrub_text)."""
    value = plain(value)
    if isinstance(value, dict):
        return {k: sanitize(v, secrets) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, list):
        return [sanitize(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value


def secret_values(mapping, min_length=6):
    """The string values of mapping (environment, extra vars) whose key names a secret, long enough to be one."""
    found = set()
    for key, value in (mapping or {}).items():
        if isinstance(value, str) and is_secret_key(key) and len(value) >= min_length and '{{' not in value:
            found.add(value)
    return found


def timeline(phases, started_epoch, duration_s):
    """The run as consecutive phases, each {name, start_s, end_s, duration_s, status, recorded}, seconds from the start.

    The playbooks mark build, database, backends, release and rollback (adopt.yml: adopt); 'check' (gates, pre-flight,
    lock) runs from the start to the first phase and 'finish' from the last phase to the record. A phase still open
    when the run ended (a failure before its end was marked) ends where the next one starts, or at the record.
    """
    start = human.number(started_epoch)
    total = human.number(duration_s, 0.0)
    marked = []
    for name, phase in (phases or {}).items():
        begin = human.number((phase or {}).get('start_epoch'))
        if begin is None or start is None:
            continue
        end = human.number(phase.get('end_epoch'))
        marked.append({'name': name, 'start_s': round(begin - start, 2), 'end_s': None if end is None else round(end - start, 2),
                       'status': phase.get('status', 'running'), 'recorded': True})
    marked.sort(key=lambda p: (p['start_s'], PHASE_ORDER.index(p['name']) if p['name'] in PHASE_ORDER else 99))
    for index, phase in enumerate(marked):
        if phase['end_s'] is None:
            following = marked[index + 1]['start_s'] if index + 1 < len(marked) else total
            phase['end_s'] = max(phase['start_s'], following)
            phase['status'] = 'unfinished'
    result = []
    if start is not None:
        first = marked[0]['start_s'] if marked else total
        result.append({'name': 'check', 'start_s': 0.0, 'end_s': round(first, 2), 'status': 'ok', 'recorded': False})
    result.extend(marked)
    if marked:
        last = max(p['end_s'] for p in marked)
        result.append({'name': 'finish', 'start_s': round(last, 2), 'end_s': round(max(last, total), 2), 'status': 'ok',
                       'recorded': False})
    for phase in result:
        phase['duration_s'] = round(phase['end_s'] - phase['start_s'], 2)
    return result


def checklist(record):
    """The runbooks' 'deployment log' table, filled in: [(item, value)]."""
    phases = {p['name']: p for p in record.get('timeline', [])}
    smoke = record.get('smoke') or {}
    rate = smoke.get('success_rate')
    rollback = record.get('rollback') or {}
    migrations = (record.get('migrations') or {}).get('applied') or []
    return [
        ('Environment', record.get('environment') or 'n/a'),
        ('Version', '%s -> %s' % (record.get('previous_version') or '(none)', record.get('version') or '(none)')),
        ('Running now', record.get('running_version') or '(unknown)'),
        ('Outcome', record.get('status') or 'unknown'),
        ('Approved by', record.get('approved_by') or '(no approval recorded)'),
        ('Change ticket', record.get('ticket') or '(none)'),
        ('Total deployment time', human.duration(record.get('duration_s'))),
        ('Database phase time (backup + migrations)', human.duration(phases['database']['duration_s']) if 'database' in phases else 'n/a'),
        ('Migrations to apply' if record.get('check_mode') else 'Migrations applied', str(len(migrations))),
        ('Backend phase time (rolling reload)', human.duration(phases['backends']['duration_s']) if 'backends' in phases else 'n/a'),
        ('Smoke test success rate', 'n/a' if rate is None else '%s%%' % rate),
        ('Rollback required', 'this run is the ad-hoc rollback (playbooks/rollback.yml)' if record.get('kind') == 'rollback'
         else ('yes: ' + (rollback.get('why') or '(no reason recorded)')) if rollback.get('taken') else 'no'),
    ]


def build_record(facts, tasks, smoke, meta, secrets=()):
    """The run's record from what the callback saw: facts (name -> last value), tasks (list of task dicts),
    smoke (smoke_test results in order: host, phase, summary, checks), meta (playbook, run timings). Sanitized."""
    entry = dict(facts.get('deployment_history_entry') or {})
    outcome = facts.get('deployment_outcome') or {}
    failure = entry.get('failure') or outcome.get('failure') or facts.get('deployment_run_failure') or {}
    phases = entry.get('phases') or facts.get('deployment_phases') or {}
    started_epoch = human.number(facts.get('runbook_started_epoch'), meta.get('started_epoch'))
    duration = human.number(entry.get('duration_s'))
    rolled_back_only = record_kind_is_rollback(entry, facts)
    if duration is None:
        duration = round(meta.get('ended_epoch', time.time()) - started_epoch, 1) if started_epoch else None
    record = {
        'schema': SCHEMA,
        'generator': 'runbook.deploy.deploy_report',
        'playbook': meta.get('playbook'),
        'run_id': entry.get('run_id') or facts.get('runbook_run_id'),
        'environment': entry.get('environment') or meta.get('environment'),
        'kind': entry.get('kind') or facts.get('runbook_kind') or 'deploy',
        'status': entry.get('status') or outcome.get('status') or ('failed' if meta.get('failed') else 'unknown'),
        'version': entry.get('version') or meta.get('version'),
        'previous_version': entry.get('previous_version', facts.get('deployment_previous_version')),
        'running_version': entry.get('running_version'),
        'running_versions': entry.get('running_versions'),
        # A check run (ansible-playbook --check): changes are predictions, nothing was changed.
        'check_mode': bool(entry.get('check_mode')),
        'changes': entry.get('changes'),
        'actor': entry.get('actor'),
        'approved_by': entry.get('approved_by'),
        'approvals': entry.get('approvals') or [],
        'ticket': entry.get('ticket'),
        'hosts': entry.get('hosts') or sorted(meta.get('hosts', [])),
        'started_at': entry.get('started_at') or (
            datetime.datetime.fromtimestamp(started_epoch, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
            if started_epoch else None),
        'finished_at': entry.get('finished_at'),
        'duration_s': duration,
        'run_duration_s': meta.get('run_duration_s'),
        'phases': phases,
        'timeline': timeline(phases, started_epoch, duration),
        'failure': failure or None,
        'rollback': {
            'taken': 'rollback' in phases or record_kind_is_rollback(entry, facts),
            'why': (failure or {}).get('message') if failure else None,
            'status': (phases.get('rollback') or {}).get('status'),
            'result': facts.get('rollback_result') or entry.get('rollback'),
            'smoke': smoke_summary([s for s in smoke or [] if s.get('phase') == 'rollback' and not _is_rollout_gate(s)]),
        },
        'backup': entry.get('backup') or facts.get('backup_taken'),
        'migrations': facts.get('migrate_result') or ({'applied': entry.get('migrations')} if entry.get('migrations') else None),
        # The deployment's smoke tests, and the ones the rollback ran on what it rolled back to.
        # A flag rollout's health gate runs smoke_test too (the flags role): it is not the smoke test, and each
        # host's last smoke_test would otherwise be the gate's one or two checks.
        'smoke': smoke_summary([s for s in smoke or [] if (s.get('phase') != 'rollback' or rolled_back_only)
                                and not _is_rollout_gate(s)], entry.get('smoke_passed')),
        'rollout_health_checks': smoke_summary([s for s in smoke or [] if _is_rollout_gate(s)]),
        'watch': facts.get('watch_result'),
        # Whether the site's public URL served the build published (frontend_verify_url).
        'frontend_verified': facts.get('frontend_verified'),
        # The project's own scripts the hooks ran (deployment_hooks), in order, with the end of their output.
        'hooks': facts.get('deployment_hooks_run') or [],
        'preflight': facts.get('preflight_report'),
        'flags_changed': facts.get('flags_changed') or [],
        'changed': [{'host': t['host'], 'play': t['play'], 'task': t['task'], 'action': t['action']}
                    for t in tasks if t.get('changed')],
        'tasks': task_summary(tasks),
        'history': entry or None,
        'report': facts.get('deployment_report') or meta.get('report'),
    }
    return sanitize(record, secrets)


def record_kind_is_rollback(entry, facts):
    return (entry.get('kind') or facts.get('runbook_kind')) == 'rollback'


def _is_rollout_gate(run):
    return (run.get('role') or '').split('.')[-1] == 'flags'


def smoke_summary(runs, passed=None):
    """Per-host smoke_test summaries (each host's last run) and the success rate over their counted (not skipped) checks."""
    hosts = {}
    counted = succeeded = 0
    last = {}
    for run in runs or []:
        last[run.get('host')] = run
    for host, result in sorted(last.items()):
        summary = result.get('summary') or {}
        checks = result.get('checks') or []
        total = int(summary.get('total', len(checks)) or 0) - int(summary.get('skipped', 0) or 0)
        good = int(summary.get('passed', 0) or 0)
        counted += total
        succeeded += good
        hosts[host] = {'passed': good, 'counted': total,
                       'failed_checks': [c.get('name') for c in checks if not c.get('passed') and not c.get('skipped')],
                       'msg': result.get('msg') or ''}
    if not hosts and passed is None:
        return None
    return {'passed': passed if passed is not None else (counted > 0 and counted == succeeded),
            'success_rate': round(succeeded * 100.0 / counted, 1) if counted else None,
            'checks_passed': succeeded, 'checks_counted': counted, 'hosts': hosts}


def task_summary(tasks):
    ended = [t for t in tasks if t.get('duration_s') is not None]
    slowest = sorted(ended, key=lambda t: t['duration_s'], reverse=True)[:10]
    return {'results': len(tasks),
            'changed': sum(1 for t in tasks if t.get('changed')),
            'failed': sum(1 for t in tasks if t.get('status') == 'failed'),
            'slowest': [{'task': t['task'], 'host': t['host'], 'duration_s': t['duration_s']} for t in slowest]}


def render_markdown(record):
    """The record as a Markdown report (the runbooks' deployment log, the phases, then the sections as tables)."""
    title = '# %s: %s' % (_title(record), (record.get('status') or 'unknown').replace('_', ' '))
    started = 'Run `%s`, %s, started %s by %s.' % (record.get('run_id'), record.get('playbook') or 'playbook',
                                                   record.get('started_at') or '?', record.get('actor') or '?')
    out = [title, '']
    if record.get('check_mode'):
        out += ['> Check run (ansible-playbook --check): nothing was changed. The changes below are predictions.', '']
    out += [started, '', '## Deployment log', '', '| Item | Value |', '|---|---|']
    out += ['| %s | %s |' % (item, _md(value)) for item, value in checklist(record)]
    out += ['', '## Phases', '', '| Phase | Start (s) | End (s) | Duration | Status |', '|---|---|---|---|---|']
    for phase in record.get('timeline', []):
        out.append('| %s%s | %.1f | %.1f | %s | %s |' % (phase['name'], '' if phase['recorded'] else ' (derived)',
                                                         phase['start_s'], phase['end_s'], human.duration(phase['duration_s']),
                                                         phase['status']))
    for heading, note, header, table in sections(record):
        out += ['', '## %s' % heading, '']
        if note:
            out += [note, '']
        if table:
            out += ['| %s |' % ' | '.join(header), '|%s' % ('---|' * len(header))]
            out += ['| %s |' % ' | '.join(_md(_plain(cell)) for cell in row) for row in table]
    return '\n'.join(out) + '\n'


def _md(value):
    return to_text(value if value is not None else '').replace('|', '\\|').replace('\n', ' ')


_CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
.status{display:inline-block;padding:.1em .6em;border-radius:3px;color:#fff}
.succeeded,.ok{background:#2e7d32}.failed,.unfinished{background:#c62828}.rolled_back,.rollback{background:#ef6c00}
.unknown{background:#757575}.checked{background:#1565c0}.check_failed{background:#c62828}
.check{background:#e3f2fd;border-left:4px solid #1565c0;padding:.5em .8em}
th{background:#f5f5f5;font-weight:600}td{word-break:break-word}
.tl{position:relative;border:1px solid #ddd;background:#fafafa;margin:.5em 0}
.row{position:relative;height:24px;border-bottom:1px solid #eee}.row:last-child{border-bottom:0}
.lbl{position:absolute;left:6px;top:3px;width:120px;font-size:12px}
.lane{position:absolute;left:130px;right:8px;top:4px;bottom:4px}
.bar{position:absolute;top:0;bottom:0;min-width:2px;border-radius:2px;background:#1565c0}
.bar.derived{background:#90a4ae}.bar.failed,.bar.unfinished{background:#c62828}.bar.rollback{background:#ef6c00}
pre{background:#f5f5f5;padding:.6em;overflow:auto;font-size:12px}
"""


def _number(value):
    """A float as a person reads it (0.041249999999999 -> 0.04125); other values as they are."""
    if isinstance(value, float):
        return '%.4g' % value
    return value


def _breached(threshold):
    """A threshold's breach as the runbook's decision reads it: a rollback, a warning to monitor, or none."""
    if threshold.get('breached'):
        return 'yes (rollback)'
    return 'conditional (monitor)' if threshold.get('warned') else 'no'


def _flag_state(state):
    state = state if isinstance(state, dict) else {}
    if state.get('exists') is False:
        return 'absent'
    text = 'on' if state.get('enabled') else 'off'
    if state.get('rollout_percentage') is not None:
        text += ' at %s %%' % state['rollout_percentage']
    return text


def sections(record):
    """The report's sections after the deployment log and the timeline, each [(heading, note, header, rows)] with
    plain values: the HTML and the Markdown render the same tables."""
    out = []
    check = record.get('check_mode')
    changes = record.get('changes')
    if changes:
        rows = [('Release built', ', '.join(changes.get('built') or []) or 'none')]
        backup = changes.get('backup')
        rows.append(('Backup', ('%s%s%s' % ('reuse of a recent backup of ' if backup.get('reused') else '', backup.get('db'),
                                            ', uploaded to S3' if backup.get('s3') else '')) if backup else 'none'))
        rows.append(('Migrations', ', '.join(changes.get('migrations') or []) or 'none'))
        apps = changes.get('apps') or {}
        rows += [('Apps on %s' % host, ', '.join('%s: %s' % item for item in sorted(actions.items())))
                 for host, actions in sorted(apps.items())] or [('Apps', 'none')]
        frontend = changes.get('frontend')
        if frontend is not None:
            rows.append(('S3 objects uploaded', ', '.join(frontend.get('uploaded') or []) or 'none'))
            rows.append(('S3 objects deleted', ', '.join(frontend.get('deleted') or []) or 'none'))
        rows += [('Flag %s' % name, '%s -> %s' % (_flag_state(change.get('before')), _flag_state(change.get('after'))))
                 for name, change in sorted((changes.get('flags') or {}).items())]
        out.append(('What this run would change' if check else 'What this run changed',
                    'Predicted by a check run (ansible-playbook --check): nothing was changed.' if check else '',
                    ('Item', 'Value'), rows))
    verified = record.get('frontend_verified')
    if verified:
        out.append(('Frontend as visitors get it', 'The site\'s public URL (frontend_verify_url) after the sync.',
                    ('Item', 'Value'), [('URL', verified.get('url')), ('Version', verified.get('version')),
                                        ('Serves that build', 'yes' if verified.get('serves_build') else 'no'),
                                        ('Last answer', 'HTTP %s' % verified.get('status'))]))
    hooks = record.get('hooks') or []
    if hooks:
        out.append(('Your scripts', 'The commands of deployment_hooks, in the order they ran, with the end of their output.',
                    ('Hook', 'Host', 'Command', 'Result', 'Seconds', 'Output'),
                    [(h.get('hook'), h.get('host'), h.get('name'),
                      'timed out' if h.get('timed_out') else ('ok' if h.get('rc') == 0 else 'exit %s' % h.get('rc')),
                      h.get('seconds'), ' | '.join(h.get('output') or [])) for h in hooks]))
    approvals = record.get('approvals') or []
    if approvals:
        out.append(('Sign-offs', 'Each role that signed the deployment off, and who (runbook_approvals).',
                    ('Role', 'Name'), [(a.get('role'), a.get('name')) for a in approvals]))
    failure = record.get('failure')
    if failure:
        rows = [('Phase', failure.get('phase')), ('Host', failure.get('host')), ('Message', failure.get('message'))]
        if failure.get('rollback_failed'):
            rows.append(('Rollback failed', failure['rollback_failed']))
        out.append(('Failure', '', ('Item', 'Value'), rows))
    rollback = record.get('rollback') or {}
    if rollback.get('taken'):
        rows = [('Why', rollback.get('why') or '(ad-hoc rollback)'), ('Status', rollback.get('status'))]
        result = rollback.get('result') or {}
        rows += [(key.replace('_', ' ').capitalize(), _plain(value)) for key, value in sorted(result.items())
                 if value not in (None, '', [], {})] if isinstance(result, dict) else []
        smoke = rollback.get('smoke') or {}
        if smoke:
            rows.append(('Smoke tests after the rollback', '%s (%s of %s checks)' % (
                'passed' if smoke.get('passed') else 'failed', smoke.get('checks_passed'), smoke.get('checks_counted'))))
        out.append(('Rollback', '', ('Item', 'Value'), rows))
    backup = record.get('backup')
    if backup:
        out.append(('Backup', '', ('Item', 'Value'), [
            ('Path', backup.get('path')), ('Size', human.size(backup.get('size'))), ('SHA-256', backup.get('sha256')),
            ('S3', backup.get('s3_uri') or 'not uploaded')]))
    migrations = record.get('migrations') or {}
    if migrations:
        rows = [('Tool', migrations.get('tool')), ('Would apply' if check else 'Applied', ', '.join(
            m.get('name') if isinstance(m, dict) else to_text(m) for m in migrations.get('applied') or []) or 'none'),
            ('Now at', migrations.get('current_version')),
            ('Verified', 'not in a check run' if check else _plain(migrations.get('verified'))),
            ('Time', human.duration(migrations.get('duration_s')))]
        out.append(('Migrations', '', ('Item', 'Value'), [r for r in rows if r[1] not in (None, '')]))
    smoke = record.get('smoke')
    if smoke and not smoke.get('hosts'):
        out.append(('Smoke tests', 'Not run%s.' % (' (a check run reloads nothing to test)' if check else ''), (), []))
    elif smoke:
        rows = [(host, '%s of %s' % (result['passed'], result['counted']), ', '.join(result['failed_checks']) or 'none')
                for host, result in sorted((smoke.get('hosts') or {}).items())]
        out.append(('Smoke tests', 'Passed: %s, success rate %s%% (%s of %s checks).' % (
            'yes' if smoke.get('passed') else 'no', smoke.get('success_rate'), smoke.get('checks_passed'),
            smoke.get('checks_counted')), ('Host', 'Checks passed', 'Failed checks'), rows))
    gates = record.get('rollout_health_checks')
    if gates:
        out.append(('Flag rollout health checks', 'Passed: %s (%s of %s checks).' % (
            'yes' if gates.get('passed') else 'no', gates.get('checks_passed'), gates.get('checks_counted')), (), []))
    watch = record.get('watch')
    if watch:
        rows = [(name, t.get('metric') or name, '%s %s' % (t.get('op'), _number(t.get('limit'))), _number(t.get('last')),
                 _number(t.get('max')), t.get('samples'), t.get('severity') or 'immediate', _breached(t))
                for name, t in sorted((watch.get('thresholds') or {}).items())]
        note = 'Decision: %s after %s and %s sample(s); %s breach(es)%s.' % (
            watch.get('decision'), human.duration(watch.get('duration_s')), watch.get('samples'), len(watch.get('breaches') or []),
            ', %s conditional (monitor, no rollback)' % len(watch['conditional_breaches'])
            if watch.get('conditional_breaches') else '')
        out.append(('Watch window', note,
                    ('Threshold', 'Metric', 'Limit', 'Last', 'Max', 'Samples', 'Severity', 'Breached'), rows))
    flags = record.get('flags_changed') or []
    if flags:
        out.append(('Flag switches a real run would make' if check else 'Flags switched',
                    'Every switch, in order (maintenance mode and the sync are put back at the end).'
                    + (' Each is predicted from the state before the run.' if check else ''),
                    ('Flag', 'Before', 'After'),
                    [(f.get('name'), _flag_state(f.get('before')), _flag_state(f.get('after'))) for f in flags]))
    preflight = record.get('preflight')
    if preflight:
        rows = [(name, 'ok' if result.get('ok') else 'problem', result.get('detail'))
                for name, result in sorted(preflight.items()) if isinstance(result, dict)]
        rows += [('problem', '', text) for text in preflight.get('problems') or []]
        rows += [('warning', '', text) for text in preflight.get('warnings') or []]
        out.append(('Pre-flight checks', '', ('Check', 'Result', 'Detail'), rows))
    changed = record.get('changed') or []
    out.append(('Tasks that changed something', '' if changed else 'None.', ('Host', 'Task', 'Action'),
                [(c['host'], c['task'], c['action']) for c in changed]))
    slowest = (record.get('tasks') or {}).get('slowest') or []
    if slowest:
        out.append(('Slowest tasks', '', ('Task', 'Host', 'Time'),
                    [(t['task'], t['host'], human.duration(t['duration_s'])) for t in slowest]))
    return out


def _plain(value):
    """A value for a table cell: lists joined, mappings as key: value pairs, floats rounded, booleans as yes/no."""
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        return to_text(_number(value))
    if isinstance(value, (list, tuple)):
        return ', '.join(_plain(v) for v in value)
    if isinstance(value, dict):
        return '; '.join('%s: %s' % (k, _plain(v)) for k, v in sorted(value.items()))
    return to_text(value if value is not None else '')


def _title(record):
    kind = record.get('kind', 'deploy')
    text = '%s of %s to %s' % (kind.capitalize(), record.get('version') or '?', record.get('environment') or '?')
    return ('Check run: ' + text) if record.get('check_mode') else text


def render_html(record):
    """The record as one self-contained HTML page: the deployment log, a timeline of the phases, then every
    section as a table."""
    esc = html.escape
    status = record.get('status') or 'unknown'
    title = _title(record)
    total = max([p['end_s'] for p in record.get('timeline', [])] + [human.number(record.get('duration_s'), 0.0), 0.001])
    rows = []
    for phase in record.get('timeline', []):
        classes = ['bar']
        if not phase['recorded']:
            classes.append('derived')
        if phase['status'] in ('failed', 'unfinished'):
            classes.append(phase['status'])
        elif phase['name'] == 'rollback':
            classes.append('rollback')
        rows.append('<div class="row"><span class="lbl">%s %s</span><div class="lane"><div class="%s" style="left:%.2f%%;'
                    'width:%.2f%%" title="%s: %.1f s to %.1f s (%s)"></div></div></div>' % (
                        esc(phase['name']), esc(human.duration(phase['duration_s'])), ' '.join(classes),
                        100.0 * phase['start_s'] / total, 100.0 * phase['duration_s'] / total, esc(phase['name']),
                        phase['start_s'], phase['end_s'], esc(phase['status'])))
    details = []
    for heading, note, header, table in sections(record):
        details.append('<h2>%s</h2>' % esc(heading))
        if note:
            details.append('<p>%s</p>' % esc(note))
        if table:
            head = ''.join('<th>%s</th>' % esc(h) for h in header)
            body = ''.join('<tr>%s</tr>' % ''.join('<td>%s</td>' % esc(_plain(cell)) for cell in row) for row in table)
            details.append('<table><tr>%s</tr>%s</table>' % (head, body))
    banner = ('<p class="check">Check run (ansible-playbook --check): nothing was changed. The changes below are '
              'predictions of what a real run would do.</p>') if record.get('check_mode') else ''
    return ''.join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>%s</title><style>%s</style></head><body>' % (
            esc(title), _CSS),
        '<h1>%s <span class="status %s">%s</span></h1>' % (esc(title), esc(status), esc(status.replace('_', ' '))),
        banner,
        '<p>Run <code>%s</code> (%s), started %s by %s.</p>' % (
            esc(to_text(record.get('run_id'))), esc(to_text(record.get('playbook'))), esc(to_text(record.get('started_at'))),
            esc(to_text(record.get('actor')))),
        '<h2>Deployment log</h2><table>',
        ''.join('<tr><th>%s</th><td>%s</td></tr>' % (esc(item), esc(to_text(value))) for item, value in checklist(record)),
        '</table><h2>Timeline</h2><div class="tl">%s</div>' % ''.join(rows),
        '<p>%.1f s in all; grey bars are derived (check: gates, pre-flight, lock; finish: record, message, unlock).</p>' % total,
        ''.join(details),
        '</body></html>\n'])


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'runbook.deploy.deploy_report'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.facts = {}
        self.tasks = []
        self.smoke = []
        self.hosts = set()
        self.failed = False
        self.playbook = None
        self.play = None
        self.extra_vars = {}
        self.started_epoch = time.time()
        self._starts = {}
        self._secrets = secret_values(os.environ)

    # --- what the run shows -------------------------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.basename(to_text(getattr(playbook, '_file_name', '') or ''))
        self.started_epoch = time.time()

    def v2_playbook_on_play_start(self, play):
        self.play = to_text(play.get_name())
        try:
            self.extra_vars = dict(play.get_variable_manager().extra_vars)
        except Exception:  # pylint: disable=broad-except
            self.extra_vars = {}
        self._secrets |= secret_values(self.extra_vars)
        self._secrets |= set(v for v in self.get_option('redact') or [] if v)

    def v2_runner_on_start(self, host, task):
        self._starts[(host.get_name(), task._uuid)] = time.time()

    def v2_runner_on_ok(self, result):
        self._result(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, 'ignored' if ignore_errors else 'failed')

    def v2_runner_on_unreachable(self, result):
        self._result(result, 'unreachable')

    def v2_runner_on_skipped(self, result):
        self._result(result, 'skipped')

    def _result(self, result, status):
        host = result._host.get_name()
        task = result._task
        data = result._result if isinstance(result._result, dict) else {}
        now = time.time()
        begun = self._starts.pop((host, task._uuid), None)
        self.hosts.add(host)
        if status in ('failed', 'unreachable'):
            self.failed = True
        self.tasks.append({'host': host, 'play': self.play, 'task': to_text(task.get_name()), 'action': to_text(task.action),
                           'status': status, 'changed': bool(data.get('changed')) and status == 'ok',
                           'start_epoch': begun, 'duration_s': round(now - begun, 3) if begun else None})
        if task.no_log or data.get('censored') or data.get('_ansible_no_log'):
            return
        facts = data.get('ansible_facts') or {}
        for name in FACTS:
            if name in facts:
                self.facts[name] = facts[name]
        if task.action in SMOKE_ACTIONS and ('summary' in data or 'checks' in data):
            role = task._role.get_name() if getattr(task, '_role', None) else ''
            self.smoke.append({'host': host, 'phase': self._open_phase(), 'role': role, 'summary': data.get('summary') or {},
                               'msg': data.get('msg') or '',
                               'checks': [{'name': c.get('name'), 'passed': c.get('passed'), 'skipped': c.get('skipped')}
                                          for c in data.get('checks') or [] if isinstance(c, dict)]})

    def _open_phase(self):
        """The phase the run is in: the newest one marked started and not ended."""
        running = [(human.number(p.get('start_epoch'), 0.0), name) for name, p in (self.facts.get('deployment_phases') or {}).items()
                   if isinstance(p, dict) and p.get('status') == 'running']
        return max(running)[1] if running else None

    # --- the report ---------------------------------------------------------------------------------------------
    def v2_playbook_on_stats(self, stats):
        if not self.facts.get('runbook_run_id'):
            return  # not one of the deploy playbooks (or it stopped before it began)
        try:
            self._write()
        except Exception as exc:  # pylint: disable=broad-except
            self._display.warning('runbook.deploy.deploy_report: could not write the deployment report: %s' % to_text(exc))

    def _write(self):
        ended = time.time()
        location = self.facts.get('deployment_report')
        meta = {'playbook': self.playbook, 'started_epoch': self.started_epoch, 'ended_epoch': ended,
                'run_duration_s': round(ended - self.started_epoch, 1), 'hosts': self.hosts, 'failed': self.failed,
                'environment': self.extra_vars.get('runbook_environment'), 'version': self.extra_vars.get('runbook_version')}
        if not location:
            output_dir = self.get_option('output_dir')
            if not output_dir:
                self._display.vv('runbook.deploy.deploy_report: the run stopped before its record and output_dir is '
                                 'not set: no report')
                return
            base = os.path.join(output_dir, to_text(meta['environment'] or 'unknown'), to_text(self.facts['runbook_run_id']))
            location = {'json': base + '.json', 'md': base + '.md', 'html': base + '.html'}
            meta['report'] = location
        record = build_record(self.facts, self.tasks, self.smoke, meta, self._secrets)
        contents = {'json': json.dumps(record, indent=2, sort_keys=True) + '\n', 'md': render_markdown(record),
                    'html': render_html(record)}
        for kind, text in contents.items():
            path = location[kind]
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as handle:
                handle.write(scrub_text(text, self._secrets))
            os.rename(path + '.tmp', path)
        self._display.display('Deployment report: %s' % location['html'])
        if location.get('s3_bucket') and self.get_option('upload'):
            self._upload(location, contents)

    def _upload(self, location, contents):
        if not HAS_BOTO3:
            self._display.warning('runbook.deploy.deploy_report: boto3 is missing: the report was not uploaded to S3')
            return
        client = boto3.client('s3', endpoint_url=location.get('s3_endpoint_url') or None,
                              region_name=location.get('s3_region') or None)
        types = {'json': 'application/json', 'md': 'text/markdown; charset=utf-8', 'html': 'text/html; charset=utf-8'}
        for kind, text in contents.items():
            key = '%s.%s' % (location['s3_key_base'], kind)
            client.put_object(Bucket=location['s3_bucket'], Key=key, Body=scrub_text(text, self._secrets).encode('utf-8'),
                              ContentType=types[kind])
        self._display.display('Deployment report uploaded: s3://%s/%s.html' % (location['s3_bucket'], location['s3_key_base']))
