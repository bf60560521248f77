"""Who may do what with profiles, sources and imports."""

import rules

from cdp.roles import is_admin, is_compliance_officer, is_data_team

# Personal data in full: the data team (it runs imports and merges) and compliance (it answers
# data-subject requests). Marketers work with segments and aggregates, not individuals.
can_browse_profiles = is_admin | is_data_team | is_compliance_officer

rules.add_perm("profiles.browse", can_browse_profiles)
# Imports: the data team runs them; compliance may read the history (who imported what, when,
# and the error reports) to answer audits and access requests.
rules.add_perm("profiles.browse_imports", is_admin | is_data_team | is_compliance_officer)
rules.add_perm("profiles.run_imports", is_admin | is_data_team)
rules.add_perm("profiles.manage_sources", is_admin | is_data_team)

# Identity resolution: everyone who browses profiles sees the graph, the why-view and the
# flagged cases; only the data team (and admins) change it: un-merge, link or dismiss flagged
# cases, edit blocked values. Compliance reads (it answers access requests).
rules.add_perm("profiles.view_identity_graph", can_browse_profiles)
rules.add_perm("profiles.change_identity_graph", is_admin | is_data_team)
# Rectification from the profile screen: the data team and admins. Compliance officers rectify
# through a data-subject request (consent's request queue), which ties the change to the request.
rules.add_perm("profiles.rectify_profile", is_admin | is_data_team)
