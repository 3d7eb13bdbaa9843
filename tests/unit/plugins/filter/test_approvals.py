"""runbook.deploy.approvals: a run's sign-offs from extra vars (a list) or from an AWX survey's textarea (text)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.runbook.deploy.plugins.filter.approvals import approval_problems, approvals

TWO = [{'role': 'Product Owner', 'name': 'Dana'}, {'role': 'Tech Lead', 'name': 'Lee Chen'}]


@pytest.mark.parametrize('value', [
    TWO,
    [{'role': ' Product Owner ', 'name': 'Dana '}, {'name': 'Lee Chen', 'role': 'Tech Lead'}],
    'Product Owner: Dana\nTech Lead: Lee Chen\n',
    'Product Owner: Dana; Tech Lead: Lee Chen',
    '\n  Product Owner:Dana  \r\n\nTech Lead :  Lee Chen',
])
def test_a_list_and_survey_text_give_the_same_sign_offs(value):
    assert approvals(value) == TWO


def test_the_first_colon_separates_the_role_from_the_name():
    assert approvals('Security Team: J. Doe: on call') == [{'role': 'Security Team', 'name': 'J. Doe: on call'}]


@pytest.mark.parametrize('value', [None, '', [], '  \n ; '])
def test_nothing_given_is_no_sign_off(value):
    assert approvals(value) == []


@pytest.mark.parametrize('value,fragment', [
    ('Product Owner Dana', "'Product Owner Dana' is not 'Role: Name'"),
    ('Product Owner: ', "approvals[0]: a sign-off needs both a role and a name (got role 'Product Owner', name '')"),
    ([{'role': 'Tech Lead'}], 'approvals[0]: a sign-off needs both a role and a name'),
    ([TWO[0], {'role': 'QA', 'nmae': 'Kim'}], 'approvals[1]: unknown key(s) nmae'),
    ({'role': 'QA', 'name': 'Kim'}, 'not a single dictionary'),
    (['Dana'], 'approvals[0]: each sign-off is {role, name}, not a str'),
    (42, 'not a int'),
])
def test_a_malformed_sign_off_is_an_error_naming_it(value, fragment):
    with pytest.raises(AnsibleFilterError) as error:
        approvals(value)
    assert fragment in str(error.value)


REQUIRED = ['Product Owner', 'DevSecOps Lead', 'Security Team']


def test_every_required_role_signed_by_someone_else_is_no_problem():
    given = 'product owner: Dana\nDevSecOps Lead: Lee\nSecurity Team: Kim\nQA: Ana'
    assert approval_problems(given, REQUIRED) == []


def test_each_missing_role_and_each_double_signer_is_named():
    given = [{'role': 'Product Owner', 'name': 'Dana'}, {'role': 'DevSecOps Lead', 'name': 'dana'}]
    assert approval_problems(given, REQUIRED) == [
        'no sign-off by the Security Team',
        'Dana signed off as Product Owner and DevSecOps Lead: each of these roles needs its own approver']
    assert approval_problems(given, REQUIRED, distinct=False) == ['no sign-off by the Security Team']


def test_a_role_named_twice_is_one_role_and_one_sign_off_given_twice_is_one():
    assert approval_problems('Tech Lead: Dana; Tech Lead: dana', ['Tech Lead', 'tech lead']) == []


def test_without_required_roles_any_sign_off_will_do():
    assert approval_problems([], []) == [] and approval_problems('QA: Ana', None) == []
    assert approval_problems([], ['Tech Lead']) == ['no sign-off by the Tech Lead']
