"""runbook.deploy.cron_job_problems and cron_job_entry: a release's cron jobs (backend_cron_jobs) judged before
anything changes, and turned into the fields of ansible.builtin.cron."""

from __future__ import annotations

import pytest

from ansible_collections.runbook.deploy.plugins.filter.cron_job_problems import cron_job_entry, cron_job_problems

REFRESH = {'name': 'refresh-observability-views', 'schedule': '0 * * * *',
           'command': "psql \"$DATABASE_URL\" -c 'SELECT refresh_observability_views();'"}


@pytest.mark.parametrize('schedule', [
    '0 * * * *', '0 2 * * *', '*/15 * * * *', '0,30 8-18/2 1-15 jan mon', '59 23 31 12 7', ' 5 4 * * sun ',
    '@hourly', '@daily', '@reboot', '@annually'])
def test_schedules_cron_accepts_pass(schedule):
    assert cron_job_problems([dict(REFRESH, schedule=schedule)]) == []


@pytest.mark.parametrize('schedule, expected', [
    ('0 * * *', "has 4 fields: a crontab schedule has five"),
    ('0 * * * * psql', 'has 6 fields'),
    ('60 * * * *', "minute '60' is outside 0-59"),
    ('0 24 * * *', "hour '24' is outside 0-23"),
    ('0 0 0 * *', "day '0' is outside 1-31"),
    ('0 0 * 13 *', "month '13' is outside 1-12"),
    ('0 0 * * 8', "weekday '8' is outside 0-7"),
    ('*/0 * * * *', 'has a step of 0'),
    ('30-10 * * * *', 'a range that ends before it starts'),
    ('0 0 * jan-mar *', "month 'jan-mar' is not a number"),
    ('every hour', 'has 2 fields'),
    ('@hour', 'the @ times are @reboot'),
    ('', 'a schedule is needed'),
])
def test_a_schedule_cron_would_refuse_is_named_with_its_job(schedule, expected):
    problems = cron_job_problems([dict(REFRESH, schedule=schedule)])
    assert len(problems) == 1, problems
    assert problems[0].startswith("job 'refresh-observability-views': "), problems
    assert expected in problems[0], problems


def test_every_problem_of_every_job_is_listed():
    jobs = [dict(REFRESH), dict(REFRESH, schedule='0 2 * *'), {'name': 'bad name', 'schedule': '@daily', 'command': ' '},
            {'schedule': '@daily', 'command': 'true', 'host': 'all'}, {'name': 'reports', 'schedule': '@daily',
                                                                       'command': 'true', 'hosts': 'some'}, 'true']
    problems = cron_job_problems(jobs)
    assert problems == [
        "job 'refresh-observability-views': two jobs have this name",
        "job 'refresh-observability-views': schedule '0 2 * *' has 4 fields: a crontab schedule has five (minute hour "
        "day month weekday), the command goes in command",
        "job 'bad name': name must be letters, digits, \".\", \"_\" or \"-\" (it names the job's file and crontab entry)",
        "job 'bad name': command is empty",
        'job 4: unknown key host (a job has name, schedule, command, hosts)',
        'job 4: name must be letters, digits, ".", "_" or "-" (it names the job\'s file and crontab entry)',
        "job 'reports': hosts must be one (the first host) or all, not 'some'",
        'job 6 is not a mapping of name, schedule, command and hosts',
    ]
    assert cron_job_problems(None) == []
    assert cron_job_problems({'name': 'x'}) == ['must be a list of jobs ({name, schedule, command, hosts}), not dict']


def test_an_entry_carries_the_crontab_fields_and_not_the_command():
    assert cron_job_entry(REFRESH) == {'name': 'refresh-observability-views', 'hosts': 'one', 'schedule': '0 * * * *',
                                       'minute': '0', 'hour': '*', 'day': '*', 'month': '*', 'weekday': '*'}
    assert cron_job_entry(dict(REFRESH, schedule=' @daily ', hosts='all')) == {
        'name': 'refresh-observability-views', 'hosts': 'all', 'schedule': '@daily', 'special_time': 'daily'}
