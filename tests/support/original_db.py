"""The original C++ ChatServer's MySQL database, made and filled as it does.

``ORIGINAL_DDL`` is the schema the original ships (its ``chat.sql``, a
mysqldump of MySQL 5.7 with the dump's comments and counters left out): utf8
(3-byte) and latin1 columns, no key on ``offlinemessage``, a plain index, not
a primary key, on ``friend`` and ``groupuser``, and nullable name, password
and role.  ``fill`` writes rows the way the original's model classes do:
``sprintf`` into SQL text, plain-text passwords, one ``friend`` row per
direction added, and each offline message stored as the JSON its server
received (nlohmann::json dumps keys in sorted order; one-to-one messages carry
``toid``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support import mysqldb

ORIGINAL_DDL = (
    """CREATE TABLE `allgroup` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `groupname` varchar(50) CHARACTER SET latin1 NOT NULL,
  `groupdesc` varchar(200) CHARACTER SET latin1 DEFAULT '',
  PRIMARY KEY (`id`),
  UNIQUE KEY `groupname` (`groupname`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `friend` (
  `userid` int(11) NOT NULL,
  `friendid` int(11) NOT NULL,
  KEY `userid` (`userid`,`friendid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `groupuser` (
  `groupid` int(11) NOT NULL,
  `userid` int(11) NOT NULL,
  `grouprole` enum('creator','normal') CHARACTER SET latin1 DEFAULT NULL,
  KEY `groupid` (`groupid`,`userid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `offlinemessage` (
  `userid` int(11) NOT NULL,
  `message` varchar(500) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    """CREATE TABLE `user` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `name` varchar(50) DEFAULT NULL,
  `password` varchar(50) DEFAULT NULL,
  `state` enum('online','offline') CHARACTER SET latin1 DEFAULT 'offline',
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
)


@dataclass(frozen=True)
class OldUser:
    id: int
    name: str
    password: str


# What the original's users did, in order (ids as its AUTO_INCREMENT gives them).
ZHANG = OldUser(1, "zhang san", "123456")
LI = OldUser(2, "li si", "666666")
WANG = OldUser(3, "wang wu", "pa$$ w0rd")
DELETED = 4  # registered, then removed by hand: its id must not come back
GROUP_ID = 1
GROUP_NAME = "C++ chat project"

# The offline messages for li si, as the original stored them (sorted keys).
TO_LI = (
    '{"id":1,"msg":"hello","msgid":5,"name":"zhang san","time":"2026-01-02 10:00:00",'
    '"toid":2}',
    '{"groupid":1,"id":1,"msg":"hi all","msgid":9,"name":"zhang san",'
    '"time":"2026-01-02 10:00:05"}',
    '{"id":3,"msg":"are you there?","msgid":5,"name":"wang wu","time":"2026-01-02 10:01:00",'
    '"toid":2}',
)


def create(url: str) -> None:
    """Create the original's tables in the (empty) database of ``url``."""
    _execute(url, ORIGINAL_DDL)


def sprintf(template: str, *args: object) -> str:
    """The original's way of building SQL: C printf into the statement text."""
    return template % args


def fill(url: str) -> None:
    """Rows as the original's code writes them: registrations, friends, a group, chats."""
    register = "insert into user(name, password, state) values('%s', '%s', '%s')"
    statements = [sprintf(register, u.name, u.password, "offline") for u in (ZHANG, LI, WANG)]
    statements += [
        sprintf(register, "gone", "x", "offline"),
        sprintf("delete from user where id = %d", DELETED),
        # zhang san logged in and the C++ server went away with him online
        sprintf("update user set state = 'online' where id = %d", ZHANG.id),
        # zhang san added li si, wang wu added zhang san (one row each)
        sprintf("insert into friend values(%d, %d)", ZHANG.id, LI.id),
        sprintf("insert into friend values(%d, %d)", WANG.id, ZHANG.id),
        sprintf("insert into allgroup(groupname, groupdesc) values('%s', '%s')",
                GROUP_NAME, "start develop a chat project"),
    ]
    join = "insert into groupuser values(%d, %d, '%s')"
    statements += [sprintf(join, GROUP_ID, ZHANG.id, "creator"),
                   sprintf(join, GROUP_ID, LI.id, "normal"),
                   sprintf(join, GROUP_ID, WANG.id, "normal")]
    statements += [sprintf("insert into offlinemessage values(%d, '%s')", LI.id, m)
                   for m in TO_LI]
    _execute(url, statements)


def _execute(url: str, statements: tuple[str, ...] | list[str]) -> None:
    con = mysqldb.connect(url)
    try:
        cur = con.cursor()
        for statement in statements:
            cur.execute(statement)
    finally:
        con.close()


def snapshot(url: str) -> dict[str, object]:
    """Every table's definition and rows, to check that nothing changed."""
    con = mysqldb.connect(url)
    try:
        cur = con.cursor()
        cur.execute("SHOW TABLES")
        out: dict[str, object] = {}
        for (name,) in sorted(cur.fetchall()):
            cur.execute(f"SHOW CREATE TABLE `{name}`")
            definition = cur.fetchone()[1]
            cur.execute(f"SELECT * FROM `{name}`")
            out[name] = (definition, sorted(map(repr, cur.fetchall())))
        return out
    finally:
        con.close()
