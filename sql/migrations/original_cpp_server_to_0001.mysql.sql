-- upgrade from the original C++ server (mysql)
-- Run by the server at start and by `python -m chat.migrate`; shown here for reading.
-- every user keeps id, name and password (hashed with scrypt, log2n 14); everybody starts offline;
-- friendships become mutual; groups, roles and offline messages are kept, in order

DROP TABLE IF EXISTS user__upgrade;

CREATE TABLE IF NOT EXISTS user__upgrade (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(50) NOT NULL,
  password VARCHAR(255) NOT NULL,
  state ENUM('online','offline') NOT NULL DEFAULT 'offline',
  server VARCHAR(64) NULL,
  CONSTRAINT uq_user_name UNIQUE (name),
  KEY idx_user_server (server)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DROP TABLE IF EXISTS friend__upgrade;

CREATE TABLE IF NOT EXISTS friend__upgrade (
  userid INT NOT NULL,
  friendid INT NOT NULL,
  PRIMARY KEY (userid, friendid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DROP TABLE IF EXISTS allgroup__upgrade;

CREATE TABLE IF NOT EXISTS allgroup__upgrade (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  groupname VARCHAR(50) NOT NULL,
  groupdesc VARCHAR(200) NOT NULL,
  CONSTRAINT uq_allgroup_groupname UNIQUE (groupname)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DROP TABLE IF EXISTS groupuser__upgrade;

CREATE TABLE IF NOT EXISTS groupuser__upgrade (
  groupid INT NOT NULL,
  userid INT NOT NULL,
  grouprole ENUM('creator','normal') NOT NULL DEFAULT 'normal',
  PRIMARY KEY (groupid, userid),
  KEY idx_groupuser_userid (userid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DROP TABLE IF EXISTS offlinemessage__upgrade;

CREATE TABLE IF NOT EXISTS offlinemessage__upgrade (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  userid INT NOT NULL,
  message MEDIUMTEXT NOT NULL,
  KEY idx_offlinemessage_userid_id (userid, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO user__upgrade (id, name, password) VALUES (<each user>);

INSERT IGNORE INTO friend__upgrade (userid, friendid) SELECT userid, friendid FROM friend;

INSERT IGNORE INTO friend__upgrade (userid, friendid) SELECT friendid, userid FROM friend;

INSERT INTO allgroup__upgrade (id, groupname, groupdesc) SELECT id, groupname, COALESCE(groupdesc, '') FROM allgroup;

INSERT IGNORE INTO groupuser__upgrade (groupid, userid, grouprole) SELECT groupid, userid, COALESCE(grouprole, 'normal') FROM groupuser ORDER BY grouprole = 'creator' DESC;

INSERT INTO offlinemessage__upgrade (userid, message) SELECT userid, message FROM offlinemessage;

ALTER TABLE user__upgrade AUTO_INCREMENT = <that of user>;

ALTER TABLE allgroup__upgrade AUTO_INCREMENT = <that of allgroup>;

RENAME TABLE user TO user__original, user__upgrade TO user, friend TO friend__original, friend__upgrade TO friend, allgroup TO allgroup__original, allgroup__upgrade TO allgroup, groupuser TO groupuser__original, groupuser__upgrade TO groupuser, offlinemessage TO offlinemessage__original, offlinemessage__upgrade TO offlinemessage;

DROP TABLE user__original;

DROP TABLE friend__original;

DROP TABLE allgroup__original;

DROP TABLE groupuser__original;

DROP TABLE offlinemessage__original;

INSERT INTO schema_version (version, applied_at, description) VALUES (1, <now, UTC>, 'upgraded from the original C++ server''s tables');
