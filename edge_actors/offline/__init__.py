"""Offline tools: commands that read what the agent wrote, never part of the running agent.

- :mod:`edge_actors.offline.report`: ``edge-actors report`` (HTML page from an
  outbox and a sink tree; matplotlib, an optional extra).
- :mod:`edge_actors.offline.reference_cli`: ``edge-actors reference build|show``.
- :mod:`edge_actors.offline.status_view`: the human form of ``edge-actors status``.

The package root (:mod:`edge_actors`) holds the runtime: supervisor, workers,
rings, producer, outbox. Nothing in the runtime imports this package; the CLI
imports it for its sub-commands, and each module keeps its heavy imports
(matplotlib, the drift reference readers) inside the functions that need them.
"""
