-- 0001 the tables of the first release (sqlite)
-- Run by the server at start and by `python -m chat.migrate`; shown here for reading.

CREATE TABLE IF NOT EXISTS user (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name VARCHAR(50) NOT NULL,
  password VARCHAR(255) NOT NULL,
  state VARCHAR(7) CHECK (state IN ('online','offline')) NOT NULL DEFAULT 'offline',
  server VARCHAR(64) NULL,
  CONSTRAINT uq_user_name UNIQUE (name)
);

CREATE INDEX IF NOT EXISTS idx_user_server ON user (server);

CREATE TABLE IF NOT EXISTS friend (
  userid INT NOT NULL,
  friendid INT NOT NULL,
  PRIMARY KEY (userid, friendid)
);

CREATE TABLE IF NOT EXISTS allgroup (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  groupname VARCHAR(50) NOT NULL,
  groupdesc VARCHAR(200) NOT NULL,
  CONSTRAINT uq_allgroup_groupname UNIQUE (groupname)
);

CREATE TABLE IF NOT EXISTS groupuser (
  groupid INT NOT NULL,
  userid INT NOT NULL,
  grouprole VARCHAR(7) CHECK (grouprole IN ('creator','normal')) NOT NULL DEFAULT 'normal',
  PRIMARY KEY (groupid, userid)
);

CREATE INDEX IF NOT EXISTS idx_groupuser_userid ON groupuser (userid);

CREATE TABLE IF NOT EXISTS offlinemessage (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  userid INT NOT NULL,
  message TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_offlinemessage_userid_id ON offlinemessage (userid, id);

INSERT INTO schema_version (version, applied_at, description) VALUES (1, <now, UTC>, 'the tables of the first release');
