"""Day-2 lifecycle of a cluster's datastore: ``mk8s backup`` (an etcd snapshot copied
home and recorded in an index) and ``mk8s restore`` (RKE2's documented restore, which
is also the rollback of an upgrade and the recovery onto new hosts).

* :mod:`.index`: the snapshot index (``.mk8s/<name>/snapshots/index.json``) and the
  check of a snapshot against its record.
* :mod:`.snapshot`: taking a snapshot on a server and copying it home (backup and the
  snapshot before an upgrade).
* :mod:`.backup`: ``mk8s backup`` and ``--list``.
* :mod:`.restore_steps`: the restore's commands as values (pure).
* :mod:`.restore_checks`, :mod:`.restore`, :mod:`.restore_agents`: the restore's
  phases, run by the one engine (a dry run walks the same list).
* :mod:`.restore_run`: ``mk8s restore``: settings, the run, its report.
"""
