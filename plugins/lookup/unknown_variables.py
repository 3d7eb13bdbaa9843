# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
  name: unknown_variables
  short_description: The variables named like this collection's role variables that no role or playbook reads
  description:
    - Given variable names (an inventory's, extra vars'), returns those that start with the prefix of one of this
      collection's roles (C(backend_), C(backup_), C(deployment_), C(flags_), C(frontend_), C(migrate_), C(notify_),
      C(preflight_), C(rollback_), C(smoke_), C(watch_)) but that no role or playbook of the collection reads, each
      with the closest known name as a suggestion.
    - Such a variable is almost always a misspelling (C(backup_s3_buket), C(smoke_check)), and Ansible ignores it
      silently, so the setting it was meant to change keeps its default.
    - The known names are every such name in the collection's roles (argument specs, defaults, tasks, templates)
      and playbooks outside whole-line comments, read once per controller process.
  options:
    _terms:
      description: Variable names to check (lists are flattened).
      type: list
      elements: str
      required: true
    allow:
      description: Names of the user's own that may carry a role prefix (they are not reported).
      type: list
      elements: str
      default: []
"""

EXAMPLES = r"""
- name: Refuse misspelt role variables before anything changes
  ansible.builtin.assert:
    that: unknown | length == 0
    fail_msg: "Unknown variables: {{ unknown | join('; ') }}"
  vars:
    unknown: "{{ query('runbook.deploy.unknown_variables', hostvars[inventory_hostname].keys() | list) }}"
"""

RETURN = r"""
  _raw:
    description:
      - One string per unknown variable, C(<name>) or C(<name> (did you mean <known name>?)), sorted by name.
    type: list
    elements: str
"""

import difflib
import os
import re

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

ROLE_PREFIXES = ('backend', 'backup', 'deployment', 'flags', 'frontend', 'migrate', 'notify', 'preflight', 'rollback',
                 'smoke', 'watch')
PREFIXED = re.compile(r'\b(?:%s)_[a-z0-9_]*[a-z0-9]\b' % '|'.join(ROLE_PREFIXES))
FULL_LINE_COMMENT = re.compile(r'^\s*#.*$', re.M)
# The collection's root, from plugins/lookup/.
COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = ('roles', 'playbooks')
SOURCE_SUFFIXES = ('.yml', '.yaml', '.j2')

_known = None


def known_names():
    """Every role-prefixed name written anywhere in the collection's roles and playbooks."""
    global _known  # pylint: disable=global-statement
    if _known is None:
        names = set()
        for source in SOURCES:
            for dirpath, dummy, filenames in os.walk(os.path.join(COLLECTION, source)):
                for filename in filenames:
                    if filename.endswith(SOURCE_SUFFIXES):
                        with open(os.path.join(dirpath, filename), encoding='utf-8') as handle:
                            # Whole-line comments are left out: a name a comment mentions is not read.
                            text = FULL_LINE_COMMENT.sub('', handle.read())
                        names.update(PREFIXED.findall(text))
        if not names:
            raise AnsibleLookupError('unknown_variables: no role variable found under %s; the collection is '
                                     'incomplete' % COLLECTION)
        _known = frozenset(names)
    return _known


def unknown(names, allow=()):
    known = known_names()
    allowed = set(allow)
    found = []
    for name in sorted(set(names)):
        if not isinstance(name, str) or name.startswith('_') or name in known or name in allowed:
            continue
        if not PREFIXED.fullmatch(name):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        found.append('%s (did you mean %s?)' % (name, close[0]) if close else name)
    return found


def _flatten(terms):
    for term in terms:
        if isinstance(term, (list, tuple)):
            yield from _flatten(term)
        else:
            yield term


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        return unknown(list(_flatten(terms)), self.get_option('allow') or ())
