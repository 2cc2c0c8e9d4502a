"""Run commands and move files on one node: the Transport base and its implementations.

* :mod:`.base`: :class:`Transport` (run / put / get / stat), :class:`Result`.
* :mod:`.ssh`: :class:`SSHTransport`, connection, bastion hop and command execution.
* :mod:`.sftp`: file transfers over SFTP, with a fast writer for known paramiko versions.
* :mod:`.hostkeys`: known_hosts with OpenSSH's matching rules, and the key policy.
* :mod:`.identity`: private key files and their passphrases.
* :mod:`.local`: :class:`LocalTransport`, this machine.

Nothing here knows RKE2.
"""

from mk8s.deploy.transport.base import RemoteStat, Result, Transport
from mk8s.deploy.transport.hostkeys import check_host_key, fingerprint, known_hosts_name
from mk8s.deploy.transport.identity import PASSPHRASE_ENV, load_identity
from mk8s.deploy.transport.local import LocalTransport
from mk8s.deploy.transport.ssh import SSHTransport

__all__ = [
    "PASSPHRASE_ENV",
    "LocalTransport",
    "RemoteStat",
    "Result",
    "SSHTransport",
    "Transport",
    "check_host_key",
    "fingerprint",
    "known_hosts_name",
    "load_identity",
]
