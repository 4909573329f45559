"""The web front end: HTTP for the web client's files and WebSocket for chat.

Both run on the server's own reactor (``--ws-port``): ``gateway`` drives h11
and wsproto from the reactor's connections, and ``wsconn`` lets the chat
service treat a WebSocket as one more connection.
"""
