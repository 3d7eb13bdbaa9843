# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
  name: cron_job_problems
  version_added: 0.1.0
  short_description: What keeps a list of cron jobs (backend_cron_jobs) from being installed as it is
  description:
    - Checks each job of the backend role's C(backend_cron_jobs) and returns one sentence per problem, naming the
      job, empty when there is none.
    - A job is a mapping of C(name) (letters, digits, C(.), C(_), C(-); unique), C(schedule) (five crontab fields,
      each a number, range, list, C(*) or step within the field's bounds, or one of cron's C(@) times), C(command)
      (not empty) and C(hosts) (C(one) or C(all), default C(one)); other keys are problems.
  positional: _input
  options:
    _input:
      description: The jobs.
      type: raw
      required: true
  author:
    - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
# [{'name': 'refresh views', 'schedule': '0 * * *', 'command': 'psql ...'}]
problems: "{{ backend_cron_jobs | runbook.deploy.cron_job_problems }}"
# ["job 'refresh views': name must be letters, digits, ...",
#  "job 'refresh views': schedule '0 * * *' has 4 fields: a crontab schedule has five ..."]
"""

RETURN = r"""
  _value:
    description: One sentence per problem; empty when every job can be installed.
    type: list
    elements: str
"""

from ansible_collections.runbook.deploy.plugins.module_utils.cron import job_entry, job_problems


def cron_job_problems(jobs):
    return job_problems(jobs)


def cron_job_entry(job):
    return job_entry(job)


class FilterModule(object):
    def filters(self):
        return {'cron_job_problems': cron_job_problems, 'cron_job_entry': cron_job_entry}
