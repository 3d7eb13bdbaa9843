# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
  name: approvals
  version_added: 0.1.0
  short_description: Read a deployment's sign-offs (role and name each) from a list or from survey text
  description:
    - The runbooks sign a production deployment off several times (001, Product Owner, DevSecOps Lead and Security
      Team; 003, Product Owner and Tech Lead). This filter reads the sign-offs given to a run into a list of
      C({role, name}), each trimmed, in the order given.
    - A list of dictionaries, each with the keys C(role) and C(name), is what extra vars and inventories give.
    - >-
      Text, one C(Role: Name) per line or separated by C(;), is what an AWX survey's textarea gives
      (C(Product Owner: Dana; Tech Lead: Lee)). The first C(:) separates the role from the name.
    - An empty value (null, an empty string or list) gives an empty list. An entry without a role or a name is an
      error that names the entry, never a silent drop.
  positional: _input
  options:
    _input:
      description: The sign-offs, as a list of C({role, name}) dictionaries or as text.
      type: raw
      required: true
  author:
    - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
# -e '{"runbook_approvals": [{"role": "Product Owner", "name": "Dana"}, {"role": "Tech Lead", "name": "Lee"}]}'
deployment_approvals: "{{ runbook_approvals | default([]) | runbook.deploy.approvals }}"

# An AWX survey textarea: "Product Owner: Dana\nTech Lead: Lee" gives the same list.
"""

RETURN = r"""
  _value:
    description: The sign-offs, each C({role, name}).
    type: list
    elements: dict
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def _entries(value):
    if isinstance(value, str):
        lines = [line.strip() for chunk in value.splitlines() for line in chunk.split(';')]
        entries = []
        for line in (line for line in lines if line):
            role, colon, name = line.partition(':')
            if not colon:
                raise AnsibleFilterError("approvals: %r is not 'Role: Name' (one sign-off per line or per ';')" % line)
            entries.append({'role': role, 'name': name})
        return entries
    if isinstance(value, Mapping):
        raise AnsibleFilterError('approvals: give a list of {role, name} (or text, one "Role: Name" per line), '
                                 'not a single dictionary')
    try:
        return list(value)
    except TypeError:
        raise AnsibleFilterError('approvals: give a list of {role, name} (or text, one "Role: Name" per line), '
                                 'not a %s' % type(value).__name__)


def approvals(value):
    """The sign-offs as a list of {role, name}, each trimmed; an empty value is no sign-off."""
    if value is None or value == '' or value == []:
        return []
    result = []
    for index, entry in enumerate(_entries(value)):
        if not isinstance(entry, Mapping):
            raise AnsibleFilterError('approvals[%d]: each sign-off is {role, name}, not a %s' % (index, type(entry).__name__))
        unknown = sorted(str(key) for key in entry if key not in ('role', 'name'))
        if unknown:
            raise AnsibleFilterError('approvals[%d]: unknown key(s) %s; a sign-off is {role, name}' % (index, ', '.join(unknown)))
        role = str(entry.get('role') or '').strip()
        name = str(entry.get('name') or '').strip()
        if not role or not name:
            raise AnsibleFilterError('approvals[%d]: a sign-off needs both a role and a name (got role %r, name %r)'
                                     % (index, role, name))
        result.append({'role': role, 'name': name})
    return result


def approval_problems(value, required=None, distinct=True):
    """What keeps the sign-offs from satisfying the required roles, one sentence each (empty when they do): a
    required role nobody signed, and with distinct, one person signing for several required roles."""
    given = approvals(value)
    wanted = []
    for role in (str(role).strip() for role in (required or [])):
        if role and role.lower() not in [w.lower() for w in wanted]:
            wanted.append(role)
    problems = []
    signers = {}
    for role in wanted:
        names = []
        for approval in given:
            if approval['role'].lower() == role.lower() and approval['name'].lower() not in [n.lower() for n in names]:
                names.append(approval['name'])
        if not names:
            problems.append('no sign-off by the %s' % role)
        for name in names:
            signers.setdefault(name.lower(), (name, []))[1].append(role)
    if distinct:
        for name, roles in signers.values():
            if len(roles) > 1:
                problems.append('%s signed off as %s: each of these roles needs its own approver' % (
                    name, ' and '.join(roles)))
    return problems


class FilterModule(object):
    def filters(self):
        return {'approvals': approvals, 'approval_problems': approval_problems}
