"""The disconnected side: from cluster.yaml and a verified bundle to a running cluster.

* :mod:`.apply` (``mk8s deploy``: the phase list and its report) and :mod:`.ops`
  (status, kubeconfig, reset): the entry points;
* :mod:`.phases`: one concern per module (verify, connect, preflight, stage, servers,
  agents, upgrade, reset, status, ...);
* :mod:`.engine`: runs the phases: what a run knows, and the session that acts;
* :mod:`.builders`: pure builders: steps, commands and files computed from data;
* :mod:`.transport`: run commands and move files on one node (SSH, SFTP, local);
* the cluster file: :mod:`.cluster` (the model and ``load_cluster``), :mod:`.clusterfile`,
  :mod:`.clusterchecks`, :mod:`.sshsettings`, :mod:`.rke2config`, :mod:`.registryca`;
* values shared by builders, engine and transports: :mod:`.command` (commands,
  secrets), :mod:`.steps`; and :mod:`.state`, the cluster's ``.mk8s/<name>/`` here.
"""
