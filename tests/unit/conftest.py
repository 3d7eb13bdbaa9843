"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleDone(Exception):
    """Raised in place of exit_json / fail_json, carrying the result."""


@pytest.fixture
def run_main(monkeypatch):
    """run_main(main, args) -> the result a module's main() handed to exit_json, or to fail_json (failed=True)."""
    def exit_json(self, **kwargs):
        raise ModuleDone(kwargs)

    def fail_json(self, **kwargs):
        kwargs['failed'] = True
        raise ModuleDone(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)

    def call(main, args):
        with patch_module_args(args):
            with pytest.raises(ModuleDone) as done:
                main()
        return done.value.args[0]
    return call
