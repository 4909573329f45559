import pytest

from chat.store import Group, GroupMember, GroupNameTaken, Store, User


def test_friendship_is_mutual_and_idempotent(store: Store) -> None:
    a, b, c = (store.register(n, "pw") for n in ("ann", "ben", "cat"))
    store.add_friend(a, b)
    store.add_friend(a, b)
    store.add_friend(b, a)
    store.add_friend(a, c)
    assert store.friends_of(a) == [User(b, "ben", "offline"), User(c, "cat", "offline")]
    assert store.friends_of(b) == [User(a, "ann", "offline")]
    assert store.friends_of(c) == [User(a, "ann", "offline")]
    store.mark_online(b, "s1")
    assert store.friends_of(a)[0].state == "online"
    assert store.friends_of(999_999) == []


def test_create_group_and_roles(store: Store) -> None:
    a, b, c = (store.register(n, "pw") for n in ("ann", "ben", "cat"))
    gid = store.create_group(a, "chess", "kings and queens")
    with pytest.raises(GroupNameTaken):
        store.create_group(b, "chess", "again")
    assert store.group_member_ids(gid) == [a]  # the failed create left nothing
    assert store.join_group(gid, c) is True
    assert store.join_group(gid, b) is True
    assert store.join_group(gid, b) is True  # again: no change
    assert store.join_group(gid, a) is True  # the creator stays creator
    assert store.join_group(999_999, b) is False
    assert store.group_member_ids(gid) == [a, b, c]
    assert store.group_member_ids(999_999) is None
    members = (GroupMember(a, "ann", "offline", "creator"),
               GroupMember(b, "ben", "offline", "normal"),
               GroupMember(c, "cat", "offline", "normal"))
    assert store.groups_of(b) == [Group(gid, "chess", "kings and queens", members)]


def test_groups_of_orders_and_isolates(store: Store) -> None:
    a, b, c = (store.register(n, "pw") for n in ("ann", "ben", "cat"))
    g1 = store.create_group(c, "g1", "")
    g2 = store.create_group(a, "g2", "二号群 😀")
    g3 = store.create_group(b, "g3", "not ann's")
    store.join_group(g1, a)
    store.join_group(g1, b)
    store.mark_online(c, "s1")
    groups = store.groups_of(a)
    assert [g.id for g in groups] == [g1, g2]
    assert [(m.id, m.role, m.state) for m in groups[0].members] == [
        (a, "normal", "offline"), (b, "normal", "offline"), (c, "creator", "online")]
    assert groups[1] == Group(g2, "g2", "二号群 😀", (GroupMember(a, "ann", "offline", "creator"),))
    assert [g.id for g in store.groups_of(b)] == [g1, g3]
    assert store.groups_of(999_999) == []


def test_group_names_are_exact(store: Store) -> None:
    a = store.register("ann", "pw")
    store.create_group(a, "Team", "")
    store.create_group(a, "team", "")  # case-sensitive, like user names
    assert len(store.groups_of(a)) == 2
