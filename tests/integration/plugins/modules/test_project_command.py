"""runbook.deploy.project_command: the project's own commands (builds, hooks) with an environment that no command line
holds. A task's `environment:` reaches the host as the prefix of the shell command that starts the module, which ps
shows while the command runs: these tests watch every process's command line while the command runs, and a second
watcher sees the command itself, so that a watcher that saw nothing had a chance to."""

from __future__ import annotations

import json
import uuid

from helpers import ProcessWatcher, assert_clear_failure, play_on_localhost


def test_variables_reach_the_command_and_no_command_line_and_secrets_are_masked(run_module, tmp_path):
    secret = 'canary-%s' % uuid.uuid4().hex
    control = 'project-command-%s' % uuid.uuid4().hex[:8]
    script = 'printf "%%s %%s" "$STAGE" "$NPM_TOKEN" > seen; echo "token $NPM_TOKEN"; echo %s >/dev/null; sleep 1.5' % control
    with ProcessWatcher(secret) as leaks, ProcessWatcher(control) as running:
        result = run_module('runbook.deploy.project_command', argv=['/bin/sh', '-c', script], chdir=str(tmp_path),
                            environment={'STAGE': 'build'}, secret_environment={'NPM_TOKEN': secret})
    assert result['rc'] == 0 and result['changed'] is True, result
    assert running.seen, 'the watcher never saw the command run'
    assert leaks.seen == {}, 'a command line holds the secret: %r' % leaks.seen
    assert (tmp_path / 'seen').read_text() == 'build %s' % secret
    assert result['stdout'] == 'token ********', result
    assert secret not in repr(result)
    assert result['cmd'] == ['/bin/sh', '-c', script]
    assert result['invocation']['module_args']['secret_environment'] == {
        'NPM_TOKEN': 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'}, result['invocation']


def test_a_short_secret_value_is_never_returned_but_does_not_mask_the_output(run_module):
    # As Ansible masks no_log values, CI=1 would turn v1.0.1 into v********.0.********.
    result = run_module('runbook.deploy.project_command', argv=['/bin/sh', '-c', 'echo "v1.0.1 CI=$CI"'],
                        secret_environment={'CI': '1', 'NPM_TOKEN': 'token-1-long-enough'})
    assert result['stdout'] == 'v1.0.1 CI=1', result
    assert result['invocation']['module_args']['secret_environment'] == {
        'CI': 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER', 'NPM_TOKEN': 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'}


def test_cmd_is_split_like_a_shell_and_variables_are_not_expanded_by_the_module(run_module, tmp_path):
    result = run_module('runbook.deploy.project_command', cmd="printf '%s|%s' '$HOME' ~", chdir=str(tmp_path),
                        environment={'HOME': '/nowhere'})
    assert result['rc'] == 0, result
    # Expanded, a secret would be on the printf's command line.
    assert result['stdout'] == '$HOME|~', result


def test_a_check_run_runs_nothing(tmp_path):
    kept = tmp_path / 'result.json'
    touch = {'name': 'Touch', 'runbook.deploy.project_command': {'cmd': 'touch ran', 'chdir': str(tmp_path)},
             'register': 'touched'}
    keep = {'name': 'Keep the result', 'check_mode': False,
            'ansible.builtin.copy': {'content': '{{ touched | to_json }}', 'dest': str(kept), 'mode': '0600'}}
    rc, output = play_on_localhost(tmp_path, [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [touch, keep]}],
                                   extra_args=['--check'])
    assert rc == 0, output
    result = json.loads(kept.read_text())
    assert result.get('skipped') is True and result['changed'] is False, result
    assert 'would have run' in result['msg']
    assert not (tmp_path / 'ran').exists()


def test_a_failing_command_fails_with_its_output_and_bad_input_is_named(run_module, tmp_path):
    failed = run_module('runbook.deploy.project_command', argv=['/bin/sh', '-c', 'echo broken >&2; exit 3'],
                        chdir=str(tmp_path))
    assert failed['failed'] and failed['rc'] == 3 and failed['stderr'] == 'broken', failed
    assert failed['msg'] == 'non-zero return code'

    named = run_module('runbook.deploy.project_command', cmd='true', environment={'NOT-A-NAME': 'x'})
    assert_clear_failure(named, "environment: 'NOT-A-NAME' is not a variable name")
    missing = run_module('runbook.deploy.project_command', cmd='true', chdir=str(tmp_path / 'gone'))
    assert_clear_failure(missing, 'chdir %s is not a directory' % (tmp_path / 'gone'))
    unsplittable = run_module('runbook.deploy.project_command', cmd="echo 'open")
    assert_clear_failure(unsplittable, 'cmd cannot be split into words')
    both = run_module('runbook.deploy.project_command', cmd='true', argv=['true'])
    assert_clear_failure(both, 'mutually exclusive')
