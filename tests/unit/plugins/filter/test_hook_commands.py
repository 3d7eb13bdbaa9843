"""runbook.deploy.hook_commands and the Check phase's judgement of deployment_hooks (module_utils/hooks.py)."""

from __future__ import annotations

from ansible_collections.runbook.deploy.plugins.filter.hook_commands import hook_commands
from ansible_collections.runbook.deploy.plugins.module_utils.hooks import HOOK_POINTS, hook_problems

HOOKS = {
    'after_database': ['npm run validate:data-integrity'],
    'after_release': [{'name': 'critical paths', 'command': ' npm run test:critical ', 'timeout': 900, 'hosts': 'all',
                       'environment': {'BASE_URL': 'http://127.0.0.1:3000', 'RETRIES': 2}}],
}


def test_commands_are_named_timed_and_placed():
    assert hook_commands(HOOKS, 'after_database') == [
        {'name': 'npm run validate:data-integrity', 'command': 'npm run validate:data-integrity', 'timeout': 600,
         'hosts': 'one', 'environment': {}}]
    assert hook_commands(HOOKS, 'after_release', 120) == [
        {'name': 'critical paths', 'command': 'npm run test:critical', 'timeout': 900, 'hosts': 'all',
         'environment': {'BASE_URL': 'http://127.0.0.1:3000', 'RETRIES': '2'}}]
    assert hook_commands(HOOKS, 'before_build') == [] and hook_commands({}, 'after_release') == []
    assert len(HOOK_POINTS) == 10 and HOOK_POINTS[0] == 'before_build' and HOOK_POINTS[-1] == 'after_rollback'


def test_every_problem_is_named_with_its_hook_point():
    assert hook_problems(HOOKS) == [] and hook_problems(None) == [] and hook_problems({'after_build': None}) == []
    problems = hook_problems({
        'after_relase': ['npm test'],
        'before_build': 'npm ci',
        'after_build': [' ', {'command': 'x', 'timout': 5}, {'command': '', 'timeout': 0, 'hosts': 'some'},
                        {'command': 'x', 'environment': {'BAD-NAME': 1}}, 42],
    })
    assert problems == [
        'after_build[0]: the command is empty',
        'after_build[1]: unknown key timout (a command has name, command, timeout, hosts, environment)',
        'after_build[2]: command is empty',
        'after_build[2]: timeout must be a number of seconds, 1 or more, not 0',
        "after_build[2]: hosts must be one (the first host) or all, not 'some'",
        'after_build[3]: environment must be a mapping of variable names to values',
        'after_build[4]: a command is text or a mapping of name, command, timeout, hosts, environment',
        'after_relase is not a hook point (before_build, after_build, before_database, after_database, '
        'before_backends, after_backends, before_release, after_release, before_rollback, after_rollback)',
        'before_build must be a list of commands, not str',
    ]
    assert hook_problems(['npm test']) == [
        'must be a mapping of hook point (before_build, after_build, before_database, after_database, before_backends, '
        'after_backends, before_release, after_release, before_rollback, after_rollback) to a list of commands, not list']
