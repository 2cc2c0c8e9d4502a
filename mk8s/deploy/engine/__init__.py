"""The engine: one run of ordered phases against the nodes.

What the run *knows* is :class:`~.known.Known` (the bundle, each node's facts and
outcome, the deploy context, the results phases leave for later phases): data only.
What it *does* is the :class:`~.session.Session` (execute a step, work on nodes in
parallel or in the background, record outcomes) over :class:`~.remote.Remote`
(connections, audited commands), with :mod:`.uploads` and :mod:`.readiness` (send
files, wait until Ready), :mod:`.diagnose` (why a node did not come up) and
:class:`~.journal.Journal` (what the runs recorded). :mod:`.phase` is the
:class:`~.phase.Phase` base and the one loop, :func:`~.phase.run_phases`, that runs a
real run and a dry run alike.
"""
