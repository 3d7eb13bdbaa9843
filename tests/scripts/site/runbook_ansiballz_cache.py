"""One AnsiballZ cache for every ansible-playbook of a test run (tests only).

Before each module runs, Ansible builds its payload: it walks the module's imports through every module_utils file it
needs (parsing each one) and zips them, 0.15 to 0.28 CPU seconds a module. It keeps the result in an ``ansiballz_cache``
directory of the playbook run's own temporary directory (``ansible-local-<pid>...``), removed when the run ends: each of
the test suite's ~300 playbook runs built the payloads of the same modules again (18 of them in a staging deploy).
Sharing them took CI's run from 2,427 to 2,109 CPU seconds (1,407 to 1,209 s), nothing else changed.

During a test run the modules and module_utils do not change, so ``tests/scripts/run_all.sh`` names one directory for
the whole run in RUNBOOK_ANSIBALLZ_CACHE (and removes it at the end). When ``ansible.constants`` has created a playbook
run's temporary directory, its ``ansiballz_cache`` becomes a link to that directory, so the payloads are Ansible's own
cached payloads, under Ansible's own keys (module FQCN, compression, extensions), shared by the run's processes (the
cache's own lock and atomic rename make that safe; removing the run's directory removes the link, not the target).
Without the variable (a developer's pytest or molecule run, where a module may be edited between runs) nothing changes.
"""
import os
import sys

_SHARED = os.environ.get('RUNBOOK_ANSIBALLZ_CACHE')
_TRIGGER = 'ansible.constants'


def _link_the_cache(constants):
    local_tmp = getattr(constants, 'DEFAULT_LOCAL_TMP', None)
    if not local_tmp or not os.path.isdir(local_tmp):
        return
    link = os.path.join(local_tmp, 'ansiballz_cache')
    try:
        os.makedirs(_SHARED, exist_ok=True)
        os.symlink(_SHARED, link)
    except OSError:
        pass  # Ansible made its own directory first: this run keeps a private cache, as without this hook.


class _AfterConstantsFinder(object):
    """Finds nothing itself: wraps the loader of ansible.constants to link the cache once the module has run."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != _TRIGGER:
            return None
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _link_the_cache(module)

        loader.exec_module = exec_module
        return spec


if _SHARED:
    sys.meta_path.insert(0, _AfterConstantsFinder())
