import rules

from cdp.roles import is_admin, is_compliance_officer, is_marketer

rules.add_perm("content.browse", is_admin | is_marketer | is_compliance_officer)
