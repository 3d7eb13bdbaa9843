# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cron jobs of a release (roles/backend backend_cron_jobs): their checks, and their crontab fields.

Used on the controller by the cron_job_problems and cron_job_entry filters and by check_settings, so that a
schedule cron would reject is found in the Check phase, with the job's name, not when crontab refuses it.
"""

from __future__ import annotations

import re

SPECIAL_TIMES = ('reboot', 'yearly', 'annually', 'monthly', 'weekly', 'daily', 'hourly')
JOB_KEYS = ('name', 'schedule', 'command', 'hosts')
NAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
MONTHS = ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec')
WEEKDAYS = ('sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat')
# crontab(5): field, lowest, highest, names allowed (alone, not in ranges or lists).
FIELDS = (('minute', 0, 59, ()), ('hour', 0, 23, ()), ('day', 1, 31, ()), ('month', 1, 12, MONTHS),
          ('weekday', 0, 7, WEEKDAYS))
STEP_PATTERN = re.compile(r'^(\*|\d+(?:-\d+)?)(?:/(\d+))?$')


def field_problem(value, field):
    """Why one field of a five-field schedule is not one crontab(5) accepts, or None."""
    name, low, high, names = field
    if value.lower() in names:
        return None
    for part in value.split(','):
        match = STEP_PATTERN.match(part)
        if not match:
            return '%s %r is not a number, a range, a list, * or a step (*/15)' % (name, value)
        bounds = [int(number) for number in match.group(1).split('-')] if match.group(1) != '*' else [low, high]
        if any(number < low or number > high for number in bounds):
            return '%s %r is outside %d-%d' % (name, value, low, high)
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            return '%s %r is a range that ends before it starts' % (name, value)
        if match.group(2) is not None and int(match.group(2)) == 0:
            return '%s %r has a step of 0' % (name, value)
    return None


def schedule_problem(schedule):
    """Why a schedule is not five crontab fields nor one of cron's @ times, or None."""
    if not isinstance(schedule, str) or not schedule.strip():
        return 'a schedule is needed, as five crontab fields (0 * * * *) or @hourly, @daily ...'
    schedule = schedule.strip()
    if schedule.startswith('@'):
        if schedule[1:] in SPECIAL_TIMES:
            return None
        return 'schedule %r: the @ times are %s' % (schedule, ', '.join('@' + time for time in SPECIAL_TIMES))
    fields = schedule.split()
    if len(fields) != 5:
        return ('schedule %r has %d fields: a crontab schedule has five (minute hour day month weekday), the command '
                'goes in command' % (schedule, len(fields)))
    for value, field in zip(fields, FIELDS):
        problem = field_problem(value, field)
        if problem:
            return 'schedule %r: %s' % (schedule, problem)
    return None


def job_problems(jobs):
    """One sentence per problem of a list of cron jobs; empty when every job can be installed as it is."""
    if jobs is None:
        return []
    if not isinstance(jobs, list):
        return ['must be a list of jobs ({name, schedule, command, hosts}), not %s' % type(jobs).__name__]
    problems = []
    seen = set()
    for index, job in enumerate(jobs):
        if not isinstance(job, dict):
            problems.append('job %d is not a mapping of name, schedule, command and hosts' % (index + 1))
            continue
        label = 'job %r' % job['name'] if isinstance(job.get('name'), str) and job['name'] else 'job %d' % (index + 1)
        unknown = sorted(set(job) - set(JOB_KEYS))
        if unknown:
            problems.append('%s: unknown key %s (a job has %s)' % (label, ', '.join(map(str, unknown)),
                                                                   ', '.join(JOB_KEYS)))
        name = job.get('name')
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            problems.append('%s: name must be letters, digits, ".", "_" or "-" (it names the job\'s file and '
                            'crontab entry)' % label)
        elif name in seen:
            problems.append('%s: two jobs have this name' % label)
        else:
            seen.add(name)
        problem = schedule_problem(job.get('schedule'))
        if problem:
            problems.append('%s: %s' % (label, problem))
        command = job.get('command')
        if not isinstance(command, str) or not command.strip():
            problems.append('%s: command is empty' % label)
        if job.get('hosts', 'one') not in ('one', 'all'):
            problems.append('%s: hosts must be one (the first host) or all, not %r' % (label, job.get('hosts')))
    return problems


def job_entry(job):
    """What jobs.json keeps of a job: its name, where it runs, and the ansible.builtin.cron fields of its schedule."""
    schedule = job['schedule'].strip()
    entry = dict(name=job['name'], hosts=job.get('hosts', 'one'), schedule=schedule)
    if schedule.startswith('@'):
        entry['special_time'] = schedule[1:]
    else:
        entry.update(zip(('minute', 'hour', 'day', 'month', 'weekday'), schedule.split()))
    return entry
