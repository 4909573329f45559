-- 0002 message ids and offline accounting (sqlite)
-- Run by the server at start and by `python -m chat.migrate`; shown here for reading.
-- every stored message gets a mid (node 0, oldest row first) and its size in bytes;
-- stored one-to-one messages carry 'to' instead of the original's 'toid';
-- stored messages that are not JSON objects are dropped (they could never be sent);
-- offlinebox gets each user's count and total size of stored messages

ALTER TABLE offlinemessage ADD COLUMN size INT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS offlinebox (
  userid INT NOT NULL PRIMARY KEY,
  messages INT NOT NULL DEFAULT 0,
  bytes BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS midnode (
  node INT NOT NULL PRIMARY KEY,
  server VARCHAR(64) NOT NULL,
  lease BIGINT NOT NULL DEFAULT 0,
  CONSTRAINT uq_midnode_server UNIQUE (server)
);

INSERT INTO schema_version (version, applied_at, description) VALUES (2, <now, UTC>, 'message ids and offline accounting');
