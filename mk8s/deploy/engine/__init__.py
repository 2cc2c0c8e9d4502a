"""The engine: one run of ordered phases against the nodes.

What the run *knows* is :class:`~.known.Known` (the bundle, each node's facts and
outcome, the deploy context, the results phases leave for later phases): data only.
What it *does* is the :class:`~.session.Session` (execute a step, work on nodes in
parallel or in the background, record outcomes in the journal) over
:class:`~.remote.Remote` (connections, audited commands), with :mod:`.uploads` and
:mod:`.readiness` (send files, wait until Ready) and :mod:`.diagnose` (why a node did
not come up). :mod:`.phase` is the :class:`~.phase.Phase` base and the one loop,
:func:`~.phase.run_phases`, that runs a real run and a dry run alike.
"""
