import rules

from cdp.roles import is_admin, is_compliance_officer, is_data_team, is_marketer

rules.add_perm("segments.browse", is_admin | is_marketer | is_data_team | is_compliance_officer)
