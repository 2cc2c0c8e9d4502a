"""Read-only probes of a node: what it is, what it has, what it runs.

Two commands per node: a plain one (arch, OS, user, whether ``sudo -n`` works), then,
only when the login can act as root, a privileged one (disk, RKE2 state, hashes of
what mk8s placed before). Both print ``key=value`` lines that :func:`parse` reads;
nothing here changes the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mk8s.deploy.builders.serverprobe import split_listing
from mk8s.deploy.command import Command
from mk8s.deploy.rke2config import CONFIG_DIR as CONFIG_DIR
from mk8s.deploy.rke2config import CONFIG_PATH as CONFIG_PATH
from mk8s.deploy.rke2config import DEFAULT_PATHS, NodePaths

# install.sh puts RKE2 under one of these (INSTALL_RKE2_TAR_PREFIX, or /opt/rke2 when
# /usr/local is read-only or a mount point); mk8s looks in each, in this order.
DEFAULT_PREFIXES = ("/usr/local", "/opt/rke2")
# RKE2's default paths; a node's config can move them (rke2config.NodePaths).
REGISTRIES_PATH = DEFAULT_PATHS.registries
KUBECONFIG_PATH = DEFAULT_PATHS.kubeconfig
DATA_DIR = DEFAULT_PATHS.data_dir
IMAGES_DIR = DEFAULT_PATHS.images_dir
SERVER_MANIFESTS_DIR = DEFAULT_PATHS.manifests_dir
NODE_TOKEN_PATH = DEFAULT_PATHS.node_token
KUBECTL = DEFAULT_PATHS.kubectl
# The registry's CA (spec.images.registry.caFile), for registries.yaml's tls.ca_file.
REGISTRY_CA_PATH = f"{CONFIG_DIR}/mk8s-registry-ca.pem"
# mk8s's own records (rke2config.NodePaths): a restart a run could not do yet, and the
# image archives it placed in agent/images.
RESTART_PENDING = DEFAULT_PATHS.restart_pending
PLACED_IMAGES = DEFAULT_PATHS.placed_images
# The kernel parameters RKE2's CIS profile requires, with their values: rancher/rke2
# pkg/cli/cmds/profile_linux.go (kernelRuntimeParameters, read from /proc/sys) and
# bundle/share/rke2/rke2-cis-sysctl.conf.
CIS_SYSCTLS = {
    "vm.panic_on_oom": 0,
    "vm.overcommit_memory": 1,
    "kernel.panic": 10,
    "kernel.panic_on_oops": 1,
}

UNAME_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

_BASIC_TEXT = (
    'echo "uname_m=$(uname -m)"; '
    '( . /etc/os-release 2>/dev/null; echo "os=${{PRETTY_NAME:-unknown}}" ); '
    'echo "hostname=$(hostname)"; echo "uid=$(id -u)"; '
    'if [ "$(id -u)" = 0 ]; then echo sudo=root; '
    "elif sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi"
)
BASIC = Command.script(_BASIC_TEXT, description="gather basic facts", timeout=30)
PRIVILEGED_MARK = "--- mk8s privileged facts ---"
STAT_FORMAT = "%s %.9Z %i"  # size, ctime (which no user can set back), inode


def sums_dir(staging_root: str) -> str:
    """Where mk8s records the sha256 of files it checked on a node (see :func:`record`)."""
    return f"{staging_root.rstrip('/')}/.sums"


def sum_file(staging_root: str, path: str) -> str:
    return f"{sums_dir(staging_root)}/{path.strip('/').replace('/', '%')}"


# Appended (after ``&&``) to a command template that has checked a file: remembers that
# ``{rec_path}`` hashes to ``{rec_sha}`` while its size, ctime and inode stay the same, so
# a re-run need not hash gigabytes again. Fill it with :func:`record_values`.
RECORD_TEMPLATE = (
    "mkdir -p {rec_dir} && echo {rec_sha} \"$(stat -c '" + STAT_FORMAT + "' {rec_path})\" "
    "> {rec_file}"
)


def record_values(staging_root: str, path: str, sha256: str) -> dict[str, str]:
    return {
        "rec_dir": sums_dir(staging_root),
        "rec_sha": sha256,
        "rec_path": path,
        "rec_file": sum_file(staging_root, path),
    }


# What RKE2 demands of the host: SELinux (/sys/fs/selinux/enforce, the rke2-selinux RPM),
# the etcd user and group (in /etc/passwd and /etc/group, where RKE2's Go os/user looks),
# the CIS kernel parameters (/proc/sys, as RKE2 reads them); and whether the node holds
# a datastore. Uses $db and $sysctls.
_HOST_TEXT = (
    "if command -v rpm >/dev/null 2>&1 && rpm -q rke2-selinux >/dev/null 2>&1; "
    "then echo rke2_selinux=yes; else echo rke2_selinux=no; fi; "
    'echo "selinux_enforce=$(cat /sys/fs/selinux/enforce 2>/dev/null)"; '
    "grep -q '^etcd:' /etc/passwd && echo etcd_user=yes; "
    "grep -q '^etcd:' /etc/group && echo etcd_group=yes; "
    'for k in $sysctls; do echo "sysctl $k $(cat "/proc/sys/$(printf %s "$k" | tr . /)" '
    '2>/dev/null)"; done; '
    'if [ -d "$db" ]; then echo datastore=yes; fi; '
)


# Where RKE2 is and its version: the version mk8s recorded at install (VERSION_RECORD)
# while the binary's path, size, ctime and inode are those it recorded; else the
# binary's own answer. Uses $prefixes and $sums.
_RKE2_TEXT = (
    'for p in $prefixes; do if [ -x "$p/bin/rke2" ]; then echo "rke2_prefix=$p"; '
    'if [ -f "$p/bin/rke2" ]; then r=$(cat "$sums/rke2-version" 2>/dev/null); '
    'st="$p $(stat -c \'%s %.9Z %i\' "$p/bin/rke2")"; '
    'if [ -n "$r" ] && [ "${{r%%|*}}" = "$st" ]; then echo "rke2_version=${{r#*|}}"; else '
    'v=$("$p/bin/rke2" --version 2>&1); rc=$?; '
    'if [ $rc = 0 ]; then echo "rke2_version=$(printf %s "$v" | head -n 1)"; else '
    'echo "rke2_exec_error=exit $rc: $(printf %s "$v" | tail -n 1)"; fi; fi; fi; break; fi; '
    "done; "
)


# Appended to the install command: remembers ``rke2 --version`` (first line) with the
# binary's path, size, ctime and inode, so later facts need not run the binary while
# it is untouched (a replaced binary has another inode and ctime). Uses $sums and
# $prefixes.
VERSION_RECORD = (
    'for p in $prefixes; do if [ -f "$p/bin/rke2" ]; then '
    'v=$("$p/bin/rke2" --version 2>/dev/null | head -n 1) && [ -n "$v" ] && mkdir -p "$sums" && '
    'echo "$p $(stat -c \'%s %.9Z %i\' "$p/bin/rke2")|$v" > "$sums/rke2-version"; break; '
    "fi; done; true"
)


def privileged(
    staging: str, prefixes: Sequence[str] = DEFAULT_PREFIXES, paths: NodePaths = DEFAULT_PATHS
) -> Command:
    """The root part of fact gathering, for the bundle's staging directory; RKE2 is
    looked for under each of ``prefixes`` (safe paths without spaces, see the schema),
    its files where the node's config puts them (``paths``). File hashes come from
    mk8s's records while size, ctime and inode are unchanged, else from sha256sum."""
    root = staging.rstrip("/").rsplit("/", 1)[0] or "/"
    # Every value is assigned to a shell variable once, as its own quoted word, and
    # used only as "$var": no value is ever re-read inside another quote level.
    return Command.script(
        "sums={sums}; staging={staging}; prefixes={prefixes}; config={config}; "
        "registries={registries}; token={token}; images={images}; manifests={manifests}; "
        "db={db}; sysctls={sysctls}; "
        'h() {{ k="$sums/$(printf %s "${{1#/}}" | tr / %)"; '
        "s=$(stat -c '%s %.9Z %i' \"$1\"); "
        'if [ -f "$k" ] && [ "$(cut -d" " -f2- "$k")" = "$s" ]; then cut -d" " -f1 "$k"; '
        'else sha256sum "$1" | cut -d" " -f1; fi; }}; '
        'd="$staging"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; '
        'echo "disk_free_kb=$(df -Pk "$d" | awk \'NR==2{{print $4}}\')"; '
        "if command -v rpm >/dev/null 2>&1 && rpm -q rke2-common >/dev/null 2>&1; "
        "then echo rpm=yes; else echo rpm=no; fi; "
        + _HOST_TEXT
        # RKE2's own units (rke2gates.Feature.NM_CLOUD_SETUP_ALLOWED) ask exactly this:
        + "if systemctl is-enabled --quiet nm-cloud-setup.service 2>/dev/null; "
        "then echo nm_cloud_setup=enabled; fi; "
        + _RKE2_TEXT
        + "set -- $(systemctl is-active rke2-server rke2-agent 2>/dev/null); "
        'echo "server_active=$1"; echo "agent_active=$2"; '
        'for f in "$config" "$registries"; do '
        '[ -f "$f" ] && echo "sha256 $(sha256sum "$f" | cut -d" " -f1) $f"; done; '
        'if [ -f "$token" ]; then echo "node_token=$(head -n 1 "$token")"; fi; '
        'if [ -d "$staging" ]; then cd "$staging" && '
        'for f in * */*; do [ -f "$f" ] || continue; case "$f" in '
        "install-*/*) ;; "
        '*.part) echo "part $(stat -c %s "$f") $staging/$f";; '
        '*) echo "sha256 $(h "$staging/$f") $staging/$f";; esac; done; fi; '
        'if [ -d "$images" ]; then cd "$images" && for f in *; do [ -f "$f" ] && '
        'echo "sha256 $(h "$images/$f") $images/$f"; done; fi; '
        'for f in "$manifests"/mk8s-*; do [ -f "$f" ] && echo "placed $f"; done; true',
        {
            "sums": sums_dir(root),
            "staging": staging,
            "prefixes": " ".join(prefixes),
            "config": CONFIG_PATH,
            "registries": paths.registries,
            "token": paths.node_token,
            "images": paths.images_dir,
            "manifests": paths.manifests_dir,
            "db": paths.db_dir,
            "sysctls": " ".join(CIS_SYSCTLS),
        },
        sudo=True,
        description="gather RKE2 and disk facts",
        timeout=300,
    )


def records(paths: NodePaths = DEFAULT_PATHS) -> Command:
    """The root part's last piece: mk8s's records on the node (a restart a run could not
    do yet, the image archives it placed) and the hash of the registry CA it wrote
    (RKE2 reads both at start, see :mod:`mk8s.deploy.builders.restart`)."""
    return Command.script(
        "pending={pending}; placedimg={placedimg}; regca={regca}; "
        '[ -f "$regca" ] && echo "sha256 $(sha256sum "$regca" | cut -d" " -f1) $regca"; '
        'if [ -f "$pending" ]; then '
        'echo "restart_pending=$(sort -u "$pending" | tr "\\n" " ")"; fi; '
        'if [ -d "$placedimg" ]; then for f in "$placedimg"/*; do [ -f "$f" ] && '
        'echo "mk8s_image $(head -c 64 "$f") $(basename "$f")"; done; fi; true',
        {
            "pending": paths.restart_pending,
            "placedimg": paths.placed_images,
            "regca": REGISTRY_CA_PATH,
        },
        sudo=True,
        description="read mk8s's records",
        timeout=60,
    )


def gather(
    staging: str,
    prefixes: Sequence[str] = DEFAULT_PREFIXES,
    paths: NodePaths = DEFAULT_PATHS,
    *,
    server: Command | None = None,
) -> Command:
    """Every fact in one round trip: the basic part, then the root part when the login
    is root or may ``sudo -n`` (with ``server``, a running server's own answers:
    :mod:`mk8s.deploy.builders.serverprobe`). Split the output with
    :func:`parse_gathered`."""
    # none holds a secret
    priv = privileged(staging, prefixes, paths).render() + "; " + records(paths).render()
    if server is not None:
        priv += "; " + server.render()
    return Command.script(
        _BASIC_TEXT + f"; echo '{PRIVILEGED_MARK}'; "
        'if [ "$(id -u)" = 0 ]; then sh -c {p}; '
        "elif sudo -n true 2>/dev/null; then sudo -n sh -c {p}; fi",
        {"p": priv},
        description="gather facts",
        timeout=300,
    )


def parse_gathered(out: str) -> NodeFacts:
    out, listing = split_listing(out)
    basic, mark, priv = out.partition(PRIVILEGED_MARK + "\n")
    facts = parse(basic, priv if mark else None)
    if not facts.can_root:
        return parse(basic, None)
    return replace(facts, listing=listing) if listing is not None else facts


@dataclass(frozen=True)
class NodeFacts:
    """What a node told us. ``hashes`` maps remote paths to their sha256."""

    arch: str | None
    uname_m: str
    os: str
    hostname: str
    root: bool
    sudo: bool
    disk_free: int | None = None
    rpm_installed: bool = False
    nm_cloud_setup_enabled: bool = False
    rke2_version: str | None = None
    rke2_prefix: str | None = None  # where install.sh put it (/usr/local, /opt/rke2, ...)
    # ``rke2 --version`` failed: "exit 126: ...Exec format error" (a binary of another arch)
    rke2_exec_error: str | None = None
    server_active: bool = False
    agent_active: bool = False
    # started, not yet ready: a Type=notify unit whose RKE2 has not reported ready (an
    # agent retrying a refused join stays so for ever)
    server_activating: bool = False
    agent_activating: bool = False
    node_token: str | None = field(default=None, repr=False)
    hashes: dict[str, str] = field(default_factory=dict)
    partial: dict[str, int] = field(default_factory=dict)
    placed: frozenset[str] = frozenset()  # mk8s-* files in the server manifests dir
    datastore: bool = False  # DATA_DIR/server/db exists: the server initialised or joined
    selinux_enforcing: bool = False  # /sys/fs/selinux/enforce says 1
    rke2_selinux: bool = False  # the rke2-selinux RPM is installed
    etcd_user: bool = False  # an etcd user in /etc/passwd and an etcd group in /etc/group
    sysctls: dict[str, str] = field(default_factory=dict)  # CIS_SYSCTLS key -> value read
    # Start-only inputs an earlier run changed without restarting RKE2 (RESTART_PENDING).
    restart_pending: tuple[str, ...] = ()
    # Image archives mk8s placed in agent/images: name -> sha256 (PLACED_IMAGES).
    placed_images: dict[str, str] = field(default_factory=dict)
    # What the running RKE2 reports (its node's kubeletVersion), when a server told.
    running_version: str | None = None
    # A running server's own /readyz answer (first line; None when not asked).
    readyz: str | None = None
    # The cluster's node list (kubectl get nodes -o json), when this server was asked.
    listing: str | None = field(default=None, repr=False)

    @property
    def can_root(self) -> bool:
        return self.root or self.sudo

    @property
    def running_tag(self) -> str | None:
        """The RKE2 tag the running process reports, when known and a tag."""
        v = (self.running_version or "").strip()
        return v if v.startswith("v") and "+rke2r" in v else None

    @property
    def effective_tag(self) -> str | None:
        """What the node really runs: the running version when known, else the binary on
        disk (after an interrupted upgrade the disk is new while the old one runs)."""
        return self.running_tag or self.rke2_tag

    @property
    def rke2_tag(self) -> str | None:
        """``v1.28.15+rke2r1`` from ``rke2 version v1.28.15+rke2r1 (...)``."""
        if not self.rke2_version:
            return None
        for word in self.rke2_version.split():
            if word.startswith("v") and "+rke2r" in word:
                return word
        return None


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            out[key] = value.strip()
    return out


def parse(basic: str, privileged_out: str | None) -> NodeFacts:
    """Combine the two commands' outputs into NodeFacts (never raises on odd output)."""
    b = _pairs(basic)
    uname_m = b.get("uname_m", "")
    facts: dict[str, object] = {
        "arch": UNAME_ARCH.get(uname_m),
        "uname_m": uname_m,
        "os": b.get("os", "unknown"),
        "hostname": b.get("hostname", ""),
        "root": b.get("sudo") == "root",
        "sudo": b.get("sudo") in ("root", "yes"),
    }
    if privileged_out is not None:
        p = _pairs(privileged_out)
        hashes: dict[str, str] = {}
        partial: dict[str, int] = {}
        placed: set[str] = set()
        sysctls: dict[str, str] = {}
        for line in privileged_out.splitlines():
            if line.startswith("placed /"):
                placed.add(line.removeprefix("placed "))
            words = line.split(" ", 2)
            if words[0] == "sysctl" and len(words) > 1 and words[1] in CIS_SYSCTLS:
                sysctls[words[1]] = words[2].strip() if len(words) > 2 else ""
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "sha256" and len(parts[1]) == 64:
                hashes[parts[2]] = parts[1]
            elif len(parts) == 3 and parts[0] == "part" and parts[1].isdigit():
                partial[parts[2]] = int(parts[1])
        free = p.get("disk_free_kb", "")
        facts.update(
            disk_free=int(free) * 1024 if free.isdigit() else None,
            rpm_installed=p.get("rpm") == "yes",
            nm_cloud_setup_enabled=p.get("nm_cloud_setup") == "enabled",
            rke2_version=p.get("rke2_version") or None,
            rke2_prefix=p.get("rke2_prefix") or None,
            rke2_exec_error=p.get("rke2_exec_error") or None,
            server_active=p.get("server_active") == "active",
            agent_active=p.get("agent_active") == "active",
            server_activating=p.get("server_active") == "activating",
            agent_activating=p.get("agent_active") == "activating",
            node_token=p.get("node_token") or None,
            hashes=hashes,
            partial=partial,
            placed=frozenset(placed),
            datastore=p.get("datastore") == "yes",
            selinux_enforcing=p.get("selinux_enforce") == "1",
            rke2_selinux=p.get("rke2_selinux") == "yes",
            etcd_user=p.get("etcd_user") == "yes" and p.get("etcd_group") == "yes",
            sysctls=sysctls,
            readyz=p.get("readyz"),
            **_parse_records(privileged_out, p),
        )
    return NodeFacts(**facts)  # type: ignore[arg-type]


def _parse_records(out: str, pairs: dict[str, str]) -> dict[str, object]:
    """restart_pending and placed_images from the lines of :func:`records`."""
    placed: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "mk8s_image" and len(parts[1]) == 64:
            placed[parts[2]] = parts[1]
    return {
        "restart_pending": tuple(pairs.get("restart_pending", "").split()),
        "placed_images": placed,
    }
