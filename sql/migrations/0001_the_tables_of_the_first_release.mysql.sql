-- 0001 the tables of the first release (mysql)
-- Run by the server at start and by `python -m chat.migrate`; shown here for reading.

CREATE TABLE IF NOT EXISTS user (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(50) NOT NULL,
  password VARCHAR(255) NOT NULL,
  state ENUM('online','offline') NOT NULL DEFAULT 'offline',
  server VARCHAR(64) NULL,
  CONSTRAINT uq_user_name UNIQUE (name),
  KEY idx_user_server (server)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS friend (
  userid INT NOT NULL,
  friendid INT NOT NULL,
  PRIMARY KEY (userid, friendid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS allgroup (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  groupname VARCHAR(50) NOT NULL,
  groupdesc VARCHAR(200) NOT NULL,
  CONSTRAINT uq_allgroup_groupname UNIQUE (groupname)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS groupuser (
  groupid INT NOT NULL,
  userid INT NOT NULL,
  grouprole ENUM('creator','normal') NOT NULL DEFAULT 'normal',
  PRIMARY KEY (groupid, userid),
  KEY idx_groupuser_userid (userid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS offlinemessage (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  userid INT NOT NULL,
  message MEDIUMTEXT NOT NULL,
  KEY idx_offlinemessage_userid_id (userid, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO schema_version (version, applied_at, description) VALUES (1, <now, UTC>, 'the tables of the first release');
