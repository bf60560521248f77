import rules

from cdp.roles import is_admin, is_compliance_officer

rules.add_perm("consent.browse", is_admin | is_compliance_officer)
