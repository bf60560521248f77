"""Staff roles (Django groups, created by migration cdp/0001) and their rule predicates.

Each app's rules.py composes these; views and API endpoints check permissions, never group
names directly.
"""

import rules

MARKETER = "marketer"
DATA_TEAM = "data_team"
COMPLIANCE_OFFICER = "compliance_officer"
ROLES = (MARKETER, DATA_TEAM, COMPLIANCE_OFFICER)

is_marketer = rules.is_group_member(MARKETER)
is_data_team = rules.is_group_member(DATA_TEAM)
is_compliance_officer = rules.is_group_member(COMPLIANCE_OFFICER)
is_admin = rules.is_superuser
has_any_role = is_admin | is_marketer | is_data_team | is_compliance_officer

rules.add_perm("cdp.view_dashboard", has_any_role)
