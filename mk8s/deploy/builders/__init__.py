"""The builders: what a deploy, an upgrade or a day-2 run would do, computed from data.

Each module takes the cluster file, the facts the nodes reported and the verified
bundle, and returns values: steps, commands, config files, problems. Nothing here runs
a command, connects, or keeps state, so every function is tested with no node at all,
and ``--dry-run`` prints exactly what the engine (:mod:`mk8s.deploy.engine`) executes.

* :mod:`.plan`: the steps of a deploy (stage, start, wait) and the preflight problems;
* :mod:`.install`: install.sh in tar mode, image tarballs, registries.yaml;
* :mod:`.upgradeplan`: a rolling upgrade (who, what is refused, each node's turn);
* :mod:`.restart`: when RKE2 must restart to take a change;
* :mod:`.nodeconfig`: config.yaml and registries.yaml, real and masked;
* :mod:`.addons`: the operator's charts and manifests in server/manifests;
* :mod:`.kubectl`, :mod:`.units`: RKE2's own tools and systemd units;
* :mod:`.facts`: the read-only probes of a node, and what they answer;
* :mod:`.requirements`, :mod:`.membership`: what RKE2 requires, which cluster it is;
* :mod:`.context`: what every step of one deploy shares, and the cluster's addresses.
"""
