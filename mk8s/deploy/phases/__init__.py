"""The phases of mk8s's operations, one concern per module.

A deploy is the ordered list :func:`mk8s.deploy.apply.deploy_phases`: verify, connect,
gather facts, preflight, token, (when the bundle is newer than the cluster: upgrade
preflight and an etcd snapshot), stage and install (in the background, per node), (the
rolling upgrade: servers one at a time, agents in batches), the first server, the other
servers one at a time, the charts the bundle dropped uninstalled, the agents in
parallel, the kubeconfig. Day-2 operations are lists of phases of their own
(:mod:`.status`, :mod:`.reset`), run by the same engine (:mod:`mk8s.deploy.engine`).
"""
