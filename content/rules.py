"""Who may do what with content. Marketers work on their own blocks and on those shared with them
(django-guardian, through cdp.sharing); compliance officers read everything; admins do all."""

import rules

from cdp.roles import is_admin, is_compliance_officer, is_marketer
from cdp.sharing import object_permitted

reads_all_blocks = is_admin | is_compliance_officer

rules.add_perm("content.browse", is_admin | is_marketer | is_compliance_officer)
rules.add_perm("content.view_block", reads_all_blocks | (is_marketer & object_permitted("view")))
rules.add_perm("content.change_block", is_admin | (is_marketer & object_permitted("change")))
