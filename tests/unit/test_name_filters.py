from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.coopcloud.ci.plugins.filter.names import FilterModule

F = FilterModule().filters()


def test_filters_name_things_like_the_modules():
    assert F["stack_name"]("warm-custom-html.ci.test") == "warm-custom-html_ci_test"
    assert F["cold_domain"]("custom-html", "a1b2c3", "ci.test") == "cust-a1b2c3.ci.test"
    assert F["canonical_domain"]("notes", "ci.test") == "warm-notes.ci.test"
    assert F["realm_name"]("notes", "a1b2c3") == "notes-a1b2c3"


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("stack_name", ("NotADomain",)),
        ("cold_domain", ("../x", "a1b2c3", "ci.test")),
        ("cold_domain", ("notes", "xyz", "ci.test")),
        ("canonical_domain", ("notes", "bad suffix")),
        ("realm_name", ("master", "")),
    ],
)
def test_bad_input_is_one_filter_error(name, args):
    with pytest.raises(AnsibleFilterError, match=r"invalid|too long"):
        F[name](*args)
