"""runbook.deploy.check_settings through the deployment role's Check entry point (tasks_from=variables), as the
playbooks run it: every problem of an inventory found in one run before anything changes, each with the
variable's name; secrets never quoted; settings of roles the run does not use left alone.

Before: a misspelt migrate_tool was found when the migrations were due (after the build and the backup), a
smoke_wait_timeout of the wrong type when the smoke tests ran (after the switch), and an undefined vault variable
when the role that reads it ran; only misspelt names were refused in the Check phase."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from helpers import REPO

SECRET = 'S3cr3t-p4ss-9f2c'
PLAYBOOK = [{'name': 'Check', 'hosts': 'app_servers', 'gather_facts': False, 'tasks': [
    {'name': 'Check the settings', 'ansible.builtin.include_role': {
        'name': 'runbook.deploy.deployment', 'tasks_from': 'variables'}},
    {'name': 'Show that the run went on', 'ansible.builtin.debug': {'msg': 'CHECK PASSED'}},
]}]
GOOD = {
    'ansible_connection': 'local',
    'ansible_python_interpreter': os.path.join(REPO, '.venv', 'bin', 'python'),
    'runbook_version': 'v1.0.0',
    'migrate_tool': 'flyway',
    'smoke_wait_timeout': 30,
    'smoke_checks': [{'name': 'health', 'path': '/health'}],
    'backend_env': {'DATABASE_URL': 'postgresql://app:%s@127.0.0.1/app' % SECRET},
    'migrate_db_login_password': '{{ vault_db_password }}',
    'vault_db_password': SECRET,
    # The watch is off: its settings are not the run's, and a bad one is not reported.
    'runbook_watch': False,
    'watch_duration': 'half an hour',
}


def check(tmp_path, host_vars):
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'app_servers': {'hosts': {'app1': host_vars}}}))
    playbook = tmp_path / 'check.yml'
    playbook.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    return subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', str(inventory),
                           str(playbook)], capture_output=True, text=True, check=False, timeout=180)


def test_a_valid_inventory_passes_and_unused_roles_are_not_judged(tmp_path):
    run = check(tmp_path, GOOD)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert 'CHECK PASSED' in run.stdout
    assert SECRET not in run.stdout + run.stderr


def test_every_problem_is_listed_at_once_with_its_name_and_no_secret(tmp_path):
    broken = dict(GOOD, backup_s3_buket='offsite', migrate_tool='prisam', smoke_wait_timeout='soon',
                  smoke_checks={'name': 'health'},
                  backend_env=['DATABASE_URL=postgresql://app:%s@127.0.0.1/app' % SECRET],
                  migrate_db_login_password='{{ vault_db_pasword }}',
                  # A misspelt key in the AWS settings every role shares would be ignored (S3 on AWS, not the store).
                  runbook_aws={'endpoint': 'http://127.0.0.1:9000', 'region': 'us-east-1', 'secret_key': SECRET})
    run = check(tmp_path, broken)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    assert 'CHECK PASSED' not in run.stdout
    assert '7 problem(s) in the settings of app1, found before anything changed' in output, output[-4000:]
    for expected in (
            'backup_s3_buket (did you mean backup_s3_bucket?) is named like a role variable',
            'role migrate: value of migrate_tool must be one of: prisma, flyway, got: prisam',
            "role smoke: argument 'smoke_wait_timeout' is of type str and we were unable to convert to float",
            "role smoke: argument 'smoke_checks' is of type dict and we were unable to convert to list",
            "role backend: argument 'backend_env' is of type list and we were unable to convert to dict",
            "migrate_db_login_password (role migrate) cannot be evaluated: 'vault_db_pasword' is undefined",
            'shared settings: runbook_aws.endpoint. Supported parameters include'):
        assert expected in output, (expected, output[-4000:])
    assert 'watch_duration' not in output
    assert SECRET not in output, 'a secret was quoted in the report'
    assert 'nothing was changed' in output


WATCH_CHECK = [{'name': 'Check', 'hosts': 'app_servers', 'gather_facts': False, 'tasks': [
    PLAYBOOK[0]['tasks'][0],
    # As playbooks/deploy.yml's Check play runs it: the watch itself runs only after the switch.
    {'name': 'Check the watch settings', 'ansible.builtin.include_role': {
        'name': 'runbook.deploy.watch', 'tasks_from': 'preflight'}},
    PLAYBOOK[0]['tasks'][1],
]}]
WATCHED = dict(GOOD, runbook_watch=True, watch_duration=300,
               watch_sources=[{'name': 'queue', 'url': 'http://127.0.0.1:9/queue-metrics', 'format': 'json'},
                              # runbook 002's database health, read from PostgreSQL itself
                              {'name': 'database', 'url': 'postgresql://app@127.0.0.1:9/app', 'format': 'postgres'}])


def test_a_watch_threshold_the_watch_could_not_use_is_refused_before_anything_changes(tmp_path):
    """A conditional threshold (runbook 001's "Conditional Rollback If") with a bad severity, a misspelt key or an
    escalate_after shorter than its `for` used to be found by metrics_watch after the switch, where a watch that
    cannot run rolls a healthy release back."""
    playbook = tmp_path / 'watch_check.yml'
    playbook.write_text(yaml.safe_dump(WATCH_CHECK, sort_keys=False))

    def run_check(thresholds):
        inventory = tmp_path / 'hosts.yml'
        inventory.write_text(yaml.safe_dump({'app_servers': {'hosts': {'app1': dict(WATCHED, watch_thresholds=thresholds)}}}))
        return subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', str(inventory), str(playbook)],
                              capture_output=True, text=True, check=False, timeout=180)

    good = {'name': 'queue_size', 'source': 'queue', 'metric': 'queue.size', 'op': '<', 'value': 1000, 'for': 120,
            'severity': 'conditional', 'escalate_after': 240}
    locks = {'name': 'lock_wait', 'source': 'database', 'metric': 'longest_lock_wait_s', 'op': '<', 'value': 60}
    run = run_check([good, locks])
    assert run.returncode == 0 and 'CHECK PASSED' in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]

    run = run_check([dict(good, severity='later'), dict(good, name='backlog', escalate_afer=60)])
    output = run.stdout + run.stderr
    assert run.returncode != 0 and 'CHECK PASSED' not in run.stdout, output[-4000:]
    assert '2 problem(s) in the settings of app1, found before anything changed' in output, output[-4000:]
    assert 'value of severity must be one of: immediate, conditional, got: later found in watch_thresholds' in output
    assert 'escalate_afer' in output and 'watch_thresholds' in output

    run = run_check([dict(good, escalate_after=60)])
    output = run.stdout + run.stderr
    assert run.returncode != 0 and 'CHECK PASSED' not in run.stdout, output[-4000:]
    assert "watch_thresholds[0] ('queue_size')" in output and 'escalate_after, for a conditional threshold only' in output
    assert 'for 120, escalate_after 60' in output


CRON_JOB = {'name': 'refresh-views', 'schedule': '0 * * * *', 'command': 'psql "$DATABASE_URL" -c "SELECT 1"'}
RELEASE_CHECK = [{'name': 'Release settings', 'hosts': 'app_servers', 'gather_facts': False, 'tasks': [
    {'name': 'Judge the file', 'runbook.deploy.check_settings': {
        'release_settings': '{{ release_text }}', 'release_settings_path': 'releases/v2/deploy/runbook.yml'},
     'register': 'judged', 'ignore_errors': True},
    {'name': 'Show the verdict', 'ansible.builtin.debug': {'msg': 'VERDICT {{ judged.problems | to_json }}'}},
]}]


def test_a_cron_job_crontab_would_refuse_is_found_in_the_check_phase_in_the_inventory_and_in_a_release(tmp_path):
    """Runbook 002's cron jobs: a schedule of four fields, a minute of 60 or two jobs of one name used to reach
    crontab (or install a job that never runs) after the migrations; now the Check phase names each."""
    run = check(tmp_path, dict(GOOD, backend_cron_jobs=[CRON_JOB, dict(CRON_JOB, name='reports', hosts='all')]))
    assert run.returncode == 0 and 'CHECK PASSED' in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]

    run = check(tmp_path, dict(GOOD, backend_cron_jobs=[dict(CRON_JOB, schedule='0 * * *'), CRON_JOB,
                                                        dict(CRON_JOB, name='cleanup', schedule='60 2 * * *')]))
    output = run.stdout + run.stderr
    assert run.returncode != 0 and 'CHECK PASSED' not in run.stdout, output[-4000:]
    assert '3 problem(s) in the settings of app1' in output, output[-4000:]
    for expected in ("backend_cron_jobs (role backend): job 'refresh-views': schedule '0 * * *' has 4 fields",
                     "backend_cron_jobs (role backend): job 'refresh-views': two jobs have this name",
                     "backend_cron_jobs (role backend): job 'cleanup': schedule '60 2 * * *': minute '60' is outside 0-59"):
        assert expected in output, (expected, output[-4000:])

    # The argument specification first: a job without a command is refused once, by it.
    run = check(tmp_path, dict(GOOD, backend_cron_jobs=[{'name': 'refresh-views', 'schedule': '@hourly'}]))
    output = run.stdout + run.stderr
    assert '1 problem(s) in the settings of app1' in output, output[-4000:]
    assert 'missing required arguments: command found in backend_cron_jobs' in output, output[-4000:]

    # A release may carry its own jobs (deploy/runbook.yml), judged alike.
    playbook = tmp_path / 'release_check.yml'
    playbook.write_text(yaml.safe_dump(RELEASE_CHECK, sort_keys=False))
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'app_servers': {'hosts': {'app1': {
        'ansible_connection': 'local', 'ansible_python_interpreter': GOOD['ansible_python_interpreter']}}}}))
    for text, verdict in (
            (yaml.safe_dump({'backend_cron_jobs': [CRON_JOB]}), 'VERDICT []'),
            (yaml.safe_dump({'backend_cron_jobs': [dict(CRON_JOB, schedule='@hour')]}),
             "backend_cron_jobs: job 'refresh-views': schedule '@hour': the @ times are @reboot")):
        extra = tmp_path / 'release_text.yml'
        extra.write_text(yaml.safe_dump({'release_text': text}))
        run = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', str(inventory), str(playbook),
                              '-e', '@%s' % extra], capture_output=True, text=True, check=False, timeout=180)
        assert verdict in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]


def test_a_misspelt_hook_point_is_found_in_the_check_phase(tmp_path):
    """deployment_hooks: a hook point the playbooks never reach (after_relase) would never run its script."""
    run = check(tmp_path, dict(GOOD, deployment_hooks={'after_relase': ['npm run smoke:staging'],
                                                       'after_database': [{'command': 'npm run validate', 'timout': 60}]}))
    output = run.stdout + run.stderr
    assert run.returncode != 0 and 'CHECK PASSED' not in run.stdout, output[-4000:]
    assert '2 problem(s) in the settings of app1' in output, output[-4000:]
    assert 'deployment_hooks (role deployment): after_relase is not a hook point (before_build, after_build' in output
    assert 'deployment_hooks (role deployment): after_database[0]: unknown key timout' in output


@pytest.mark.parametrize('environment', ['staging', 'production'])
@pytest.mark.parametrize('profile', sorted(p for p in os.listdir(os.path.join(REPO, 'inventories', 'profiles'))
                                           if p.endswith('.yml')))
def test_every_profile_passes_the_check_phase(tmp_path, profile, environment):
    """A profile is what users copy: every setting it makes (cron jobs, hooks, thresholds, channels) must pass the
    Check phase as it stands, given its secrets."""
    with open(os.path.join(REPO, 'inventories', 'profiles', profile)) as handle:
        text = handle.read()
    settings = yaml.safe_load(text)
    secrets = dict((name, 'dummy-%s' % name) for name in set(re.findall(r'\bvault_\w+', text)))
    host_vars = dict(settings, **secrets)
    host_vars.update(ansible_connection='local', runbook_version='v1.0.0', runbook_environment=environment,
                     ansible_python_interpreter=os.path.join(REPO, '.venv', 'bin', 'python'))
    run = check(tmp_path, host_vars)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert 'CHECK PASSED' in run.stdout
