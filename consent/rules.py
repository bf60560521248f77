"""Who may do what in the consent app. Compliance officers own consent, requests and the audit
log; the data team may read a profile's consent (it runs merges and imports) and rectify
profiles; marketers see none of it (they work with aggregates)."""

import rules

from cdp.roles import is_admin, is_compliance_officer, is_data_team

compliance = is_admin | is_compliance_officer

rules.add_perm("consent.browse", compliance)
rules.add_perm("consent.view_ledger", compliance)
rules.add_perm("consent.export_ledger", compliance)
rules.add_perm("consent.verify_ledger", compliance)
rules.add_perm("consent.record_consent", compliance)
rules.add_perm("consent.manage_mappings", compliance)
rules.add_perm("consent.manage_requests", compliance)
rules.add_perm("consent.view_audit", compliance)
rules.add_perm("consent.view_profile_consent", compliance | is_data_team)
rules.add_perm("consent.rectify_profile", compliance | is_data_team)
