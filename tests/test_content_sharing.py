"""Content blocks are shared per object (django-guardian): a marketer lists and opens her own
blocks and those shared with her; compliance officers read every block; the data team none."""

import pytest

from cdp.sharing import object_share
from content.models import ContentBlock, Slot

pytestmark = pytest.mark.django_db


@pytest.fixture
def blocks(users):
    slot = Slot.objects.create(key="home_hero", name="Home hero")
    return {name: ContentBlock.objects.create(key=name, name=name.title(), slot=slot, template=f"<p>{name}</p>",
                                              owner=users[owner])
            for name, owner in (("alices_block", "alice"), ("roots_block", "root"))}


def _listed(client, user) -> set[str]:
    client.force_login(user)
    response = client.get("/content/")
    assert response.status_code == 200
    return {block.key for block in response.context["page"].object_list}


def test_the_list_shows_own_and_shared_blocks_only(client, users, blocks):
    assert _listed(client, users["alice"]) == {"alices_block"}
    assert _listed(client, users["cora"]) == {"alices_block", "roots_block"}
    assert _listed(client, users["root"]) == {"alices_block", "roots_block"}
    object_share(blocks["roots_block"], to=users["alice"], action="view")
    assert _listed(client, users["alice"]) == {"alices_block", "roots_block"}


def test_change_needs_ownership_or_a_change_grant(users, blocks):
    alice, mine, theirs = users["alice"], blocks["alices_block"], blocks["roots_block"]
    assert alice.has_perm("content.change_block", mine)
    assert not alice.has_perm("content.view_block", theirs) and not alice.has_perm("content.change_block", theirs)
    object_share(theirs, to=alice, action="view")
    assert alice.has_perm("content.view_block", theirs) and not alice.has_perm("content.change_block", theirs)
    object_share(theirs, to=alice, action="change")
    assert alice.has_perm("content.change_block", theirs)
    assert users["cora"].has_perm("content.view_block", theirs)
    assert not users["cora"].has_perm("content.change_block", theirs)  # read-only outside consent
    assert not users["dan"].has_perm("content.view_block", mine)
    assert not users["mallory"].has_perm("content.view_block", mine)
