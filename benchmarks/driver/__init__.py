"""Reusable pieces of the high-rate benchmark drivers (ping-pong, and later flood,
fan-out, login storm, capacity).

- `histogram`: an HDR-style log-bucket latency histogram, mergeable across processes.
- `servers`: start and stop the systems under test (the chat server, the reference
  relay) as child processes on free ports, and describe the machine.
- `users`: a pool of protocol-speaking non-blocking connections on one selector,
  with pipelined register and login.
- `workers`: run K driver processes in step (ready, go at one instant, results back),
  with a live progress line.

The package imports only `chat.protocol` from the project, never the server.
"""
