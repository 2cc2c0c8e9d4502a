#!/usr/bin/python3
"""RKE2 stand-in for mk8s tests (Python 3 stdlib only; runs on the test nodes).

Installed as ``PREFIX/bin/rke2`` (``/usr/local``, or ``/opt/rke2`` when /usr/local is a
mount point or read-only, or INSTALL_RKE2_TAR_PREFIX) by install.sh from the generated
``rke2.linux-ARCH.tar.gz``;
the server copies itself to ``/var/lib/rancher/rke2/bin/kubectl`` and behaves as
kubectl when called by that name.  It enforces the RKE2 contract mk8s relies on
(docs/deploy.md; each rule in CONTRACT.md): air-gap images present, bootstrap writes
token and kubeconfig, joins need the right token, a reachable server and matching
critical settings, one server join (etcd learner) at a time, ``kubectl get nodes``
lists the cluster's registered nodes.

The cluster protocol is HTTPS, like RKE2's: 9345 (supervisor: /cacerts, /ping,
join, /db/info, /db/snapshot, heartbeats) and 6443 (Kubernetes API: health,
discovery, /version, nodes list/get/patch/delete, an empty pods list, namespaces,
configmaps, secrets and serviceaccounts; Table output for kubectl).

The datastore is a real etcd (mk8s_standin/etcd.py, shipped beside this program in
share/rke2): one member per server, learners promoted by the leader, snapshots,
cluster-reset and member removal as RKE2 does them; every server's API reads and
writes the same etcd (mk8s_standin/apiobjects.py), so any server answers for the
whole cluster and nothing is written without etcd quorum.  ``rke2 server
--cluster-reset [--cluster-reset-restore-path=FILE]`` resets it to one member (from
the snapshot) and exits; ``rke2 certificate rotate`` renews this node's leaf
certificates at its next start (mk8s_standin/certs.py).

TLS (made with the node's ``openssl`` CLI): the first server creates two EC P-256
CAs, server-ca (signs serving certificates) and client-ca (signs client
certificates); joining servers get them with the cluster's bootstrap data.
Every server makes its own serving certificate (both ports) for its addresses,
its name, 127.0.0.1, ::1, localhost, kubernetes[.default[.svc[.cluster.local]]],
the service IP and every ``tls-san``; and an admin client certificate
(CN=system:admin, O=system:masters) for /etc/rancher/rke2/rke2.yaml.  Files
under /var/lib/rancher/rke2/server/tls/.  The API authenticates by client
certificate only (no anonymous access, so /readyz needs one too): none is 401,
one without the system:masters group is 403.  Tokens are
``K10<sha256 of server-ca.crt>::server:<secret>``; a joining node fetches
/cacerts, refuses the server when the token's CA hash does not match, and then
verifies the server's certificate against that CA (a bare secret trusts the
CA it is given, as RKE2 does).

config.yaml: a flat mapping.  Accepted YAML subset: ``key: scalar`` (plain,
'single' or "double" quoted; true/false/null/ints), ``key: [a, b]`` flow lists,
block lists (``key:`` followed by ``- item`` lines), ``{}``/``[]``, comments.
A JSON object is accepted too.  Files in config.yaml.d/*.yaml are merged after it.

Upgrades (RKE2's air-gap way: new images into agent/images, the new install.sh, restart;
servers first, one at a time, then agents).  The stand-in refuses, exiting non-zero
with a ``level=fatal`` log line:
* a node whose agent/images has no file with the sha256 of its release's
  ``rke2-images.linux-ARCH.tar.zst`` or ``rke2-images-core.linux-ARCH.tar.zst`` (the
  hashes of the release's image tarballs are substituted at build, IMAGES_JSON);
  files of other releases are imported with a warning;
* a start at a version older than the one the node last ran (recorded in
  /var/lib/rancher/rke2/mk8s-standin-version.json after each successful start),
  rc < final < respin; on a server, a start more than one minor above it;
* a server whose minor differs by more than one from another running server's (on
  join, by the server it joins; on restart, after pulling the registry from peers);
* an agent whose minor is newer than the oldest running server's.
``rke2 etcd-snapshot save [--name NAME] [--dir DIR]`` asks the running server on the
node to write ``DIR/NAME-<node name>-<unix time>`` (default NAME on-demand, DIR
/var/lib/rancher/rke2/server/db/snapshots), a real etcd snapshot (``etcdctl snapshot
save``); ``ls`` and ``delete NAME...`` list and remove them; all fail on an agent and
when rke2-server is not running.  kubectl parses flags like
kubectl (an unknown flag, or a flag of another verb, is an error); ``drain NODE``
takes --ignore-daemonsets, --delete-emptydir-data, --force, --disable-eviction,
--timeout=DURATION (Go syntax: 300s, 5m), --grace-period=N; there are no pods, so a
drain of an existing node cordons it and succeeds; of a missing node it fails (NotFound).

Workload images (containerd's import; docs/bundles.md, workloads): at start, after the checks above, every
tarball in agent/images (*.tar, *.tar.gz, *.tar.zst via the ``zstd`` CLI, *.tar.bz2,
*.tar.lz4 via ``lz4``; by suffix, as RKE2 chooses) is read as an OCI image layout
(oci-layout, index.json, blobs/sha256/HEX: every descriptor from index.json down through
nested indexes to configs and layers checked for digest and size, a gzip layer's
uncompressed digest against the config's rootfs.diff_ids, and every blob against its
name) or a docker archive (manifest.json; the config's sha256 must be its file name,
each layer's sha256 its rootfs.diff_ids entry).  A mismatch or a missing blob fails the
whole file's import, as containerd's does: ``level=error msg="Failed to import FILE:
image NAME: layer ...: digest mismatch: expected sha256:X got sha256:Y"``; the node
still starts. An index entry whose manifest the archive lacks (a platform not carried)
is skipped from v1.27.15/v1.28.11/v1.29.6/v1.30.2 (WithSkipMissing) and fails the file
before ("content digest sha256:...: not found"). From v1.29.13/v1.30.9/v1.31.5 a
tarball placed while the node runs is imported within a second; before, at the next
start only. These release gates are gates.py (embedded, see standin_module).  Results (per file, cached by size/mtime/inode) are in
/var/lib/rancher/rke2/agent/mk8s-standin-images.json, printed by ``rke2 mk8s-images``:
{"files": {FILE: {"key", "images", ["error"]}}, "images": [{"name", "digest", "format",
"file"}]}; name is the io.containerd.image.name (else ref.name) annotation or a
normalised docker RepoTag (docker.io/library/...), digest the index.json descriptor's
(OCI) or the config's (docker archive, the image ID).

Manifests (RKE2's deploy controller and helm-controller): a server processes each
*.yaml/*.yml/*.json in server/manifests (not hidden, no FILE.skip beside it) at start
and on every poll (each HEARTBEAT, at most 1 s): documents split on ``---``, parsed
with the block-YAML subset above (or JSON); each object needs apiVersion, kind and
metadata.name (a ``kind: List`` is unpacked).  A HelmChart (helm.cattle.io/v1) needs
spec.chartContent: base64 of a gzip tar with one NAME/Chart.yaml holding name and
version; it is then "installed", other objects "applied".  Any failure refuses the
whole file: ``level=error msg="Failed to process manifest FILE: ..."``, recorded
"failed" with the error.  HelmCharts are objects of the cluster (helmcontroller.py):
one Helm release per object name, applied from every file when a server starts and
from a file when it changes, never deleted when a file goes; ``kubectl delete
helmchart NAME -n NS`` uninstalls; a chartContent over 1 MiB never installs;
``kubectl get --raw /mk8s/helm-releases`` lists the releases.  Records are per server in etcd;
``kubectl get --raw /mk8s/manifests`` gives {"servers": {NODE: {"files": {FILE:
{"status": "applied"|"failed", "sha256", "objects": [{"apiVersion", "kind", "name",
"namespace", "status": "applied"|"installed", ["chart", "version",
"targetNamespace"]}], ["error"]}}}}}; ``kubectl get helmcharts [NAME] [-n NS | -A]
[-o json]`` lists the installed HelmCharts (status.chart, status.version).

Host and config rules (mk8s issue #22; each function cites the upstream file it
models): the node name is lower-cased and must be an RFC 1123 subdomain, else the node
never registers; a server with no ``server:`` and no datastore bootstraps a new cluster
(its own CAs); a full K10 token cannot bootstrap one; a node whose cluster CNI (canal
unless ``cni:``) has no images on it registers NotReady ("cni plugin not initialized");
an agent ignores its own ``system-default-registry`` and uses its server's;
``data-dir``, ``write-kubeconfig`` and ``private-registry`` move the files; where
/sys/fs/selinux/enforce is 1 the rke2-selinux policy must be installed; ``profile:
cis`` needs the CIS kernel parameters (/proc/sys) and, on servers, the etcd user and
group (/etc/passwd, /etc/group).

Tunables (environment; put them in /etc/default/rke2-server or -agent):
  MK8S_STANDIN_JOIN_TIMEOUT     seconds a joining server keeps retrying an unreachable one (30)
  MK8S_STANDIN_AGENT_RETRY      seconds between an agent's join attempts (5; it never gives up)
  MK8S_STANDIN_LEARNER_SECONDS  length of a server join's learner phase (1.5)
  MK8S_STANDIN_START_SECONDS    bootstrap time of a first server (0.3)
  MK8S_STANDIN_HEARTBEAT        node heartbeat interval (1)
  MK8S_STANDIN_NODE_GRACE       a node is NotReady this long after its last heartbeat (8)
  MK8S_STANDIN_CERT_SECONDS     validity of new leaf certificates (365 days; <= 0: expired)
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.client
import http.server
import importlib
import importlib.abc
import importlib.util
import io
import ipaddress
import json
import os
import posixpath
import re
import secrets
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import types
import typing
import urllib.error
import urllib.parse
import urllib.request
import zlib

TAG = "@@RKE2_TAG@@"
ARCH = "@@RKE2_ARCH@@"
# The stand-in's other node-side modules (gates.py, helmcontroller.py, etcd.py, ...),
# embedded at build as base64 JSON {name: source}; loaded by standin_module().
STANDIN_MODULES = "@@STANDIN_MODULES@@"
# name -> sha256 of this release's airgap image tarballs (rke2-images*.linux-ARCH.tar.zst),
# taken from the release's own assets when its rke2.linux-ARCH.tar.gz was built.
IMAGES_JSON = """@@RKE2_IMAGES@@"""

CONFIG = "/etc/rancher/rke2/config.yaml"
DATA_DIR = "/var/lib/rancher/rke2"
SERVER_DIR = DATA_DIR + "/server"
# ---- etcd ---- the cluster's bootstrap data (CAs, token secret, critical settings): its
# authoritative copy is in etcd, this is the disk copy RKE2 keeps in server/tls and cred
BOOTSTRAP_FILE = SERVER_DIR + "/cred/mk8s-standin-bootstrap.json"
TOKEN_FILE = SERVER_DIR + "/token"
ETCD_LOG_DIR = DATA_DIR + "/agent/logs"
# ---- etcd end ----
AGENT_STATE = DATA_DIR + "/agent/mk8s-standin-agent.json"
IMAGES_DIR = DATA_DIR + "/agent/images"
IMAGE_HASH_CACHE = DATA_DIR + "/agent/mk8s-standin-image-hashes.json"
NODE_VERSION = DATA_DIR + "/mk8s-standin-version.json"
SNAPSHOT_DIR = SERVER_DIR + "/db/snapshots"
# The images a node cannot run without: the full set (core + canal) or core alone.
CORE_IMAGES = (f"rke2-images.linux-{ARCH}.tar.zst", f"rke2-images-core.linux-{ARCH}.tar.zst")
KUBECTL = DATA_DIR + "/bin/kubectl"
KUBECONFIG = "/etc/rancher/rke2/rke2.yaml"
TLS_DIR = SERVER_DIR + "/tls"
AGENT_CA = DATA_DIR + "/agent/server-ca.crt"
NODE_PASSWORD = "/etc/rancher/node/password"
SUPERVISOR_PORT = 9345
API_PORT = 6443
# upstream: k3s-io/k3s pkg/agent/containerd/containerd.go (preloadFile suffixes); stricter subset [CONTRACT IP1]
IMAGE_SUFFIXES = (".tar.zst", ".tar.gz", ".tar", ".tar.lz4", ".tar.bz2")
# upstream: rancher/rke2-docs docs/reference/server_config.md, k3s-io/k3s pkg/daemons/config/types.go [CONTRACT JN2]
# Critical configuration values (docs.rke2.io server_config): must be equal on all
# servers.  The stand-in also compares `cni`.
CRITICAL = {
    "agent-token": "",
    "cluster-cidr": "10.42.0.0/16",
    "cluster-dns": "10.43.0.10",
    "cluster-domain": "cluster.local",
    "disable-cloud-controller": "false",
    "disable-kube-proxy": "false",
    "egress-selector-mode": "agent",
    "service-cidr": "10.43.0.0/16",
    "cni": "canal",
    # k3s CriticalControlArgs fields with an RKE2 server flag: EmbeddedRegistry,
    # DisableServiceLB (RKE2's enable-servicelb), EncryptProvider, SupervisorMetrics.
    # EncryptSecrets is not here: rancher/rke2 pkg/rke2/rke2.go (Server) sets
    # secrets-encryption to true on every server, so it cannot differ.
    "embedded-registry": "false",
    "enable-servicelb": "false",
    "secrets-encryption-provider": "aescbc",
    "supervisor-metrics": "false",
}


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


JOIN_TIMEOUT = env_float("MK8S_STANDIN_JOIN_TIMEOUT", 30)
AGENT_RETRY = env_float("MK8S_STANDIN_AGENT_RETRY", 5)
LEARNER_SECONDS = env_float("MK8S_STANDIN_LEARNER_SECONDS", 1.5)
START_SECONDS = env_float("MK8S_STANDIN_START_SECONDS", 0.3)
HEARTBEAT = env_float("MK8S_STANDIN_HEARTBEAT", 1)
NODE_GRACE = env_float("MK8S_STANDIN_NODE_GRACE", 8)
LEARNER_STALE = max(30.0, 10 * LEARNER_SECONDS)


class Fatal(Exception):
    pass


def log(msg: str, level: str = "info") -> None:
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sys.stderr.write(f'time="{ts}" level={level} msg="{msg}"\n')
    sys.stderr.flush()


def now_ns() -> int:
    return time.time_ns()


class _Embedded(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``mk8s_standin.NAME`` from STANDIN_MODULES, so that the embedded modules'
    relative imports (``from .etcd import Client``) find their siblings."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        pkg, _, name = fullname.partition(".")
        if pkg != "mk8s_standin" or name not in self.sources:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__.split(".", 1)[1]
        exec(compile(self.sources[name], f"<mk8s stand-in {name}.py>", "exec"), module.__dict__)


def standin_module(name: str) -> types.ModuleType:
    """One of the stand-in's embedded modules (STANDIN_MODULES), loaded once."""
    if "mk8s_standin" not in sys.modules:
        package = types.ModuleType("mk8s_standin")
        package.__path__ = []
        sys.modules["mk8s_standin"] = package
        sys.meta_path.insert(0, _Embedded(json.loads(base64.b64decode(STANDIN_MODULES))))
    return importlib.import_module(f"mk8s_standin.{name}")


class _Lazy:
    """An embedded module, loaded when first used (``etcd.Member`` ...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> object:
        return getattr(standin_module(self.name), attr)


# ---- etcd: the modules of the datastore (etcd.py, members.py, snapshots.py), the API's
# objects (apiobjects.py, apiformat.py) and certificates (certs.py)
apiobjects, certs, etcd, members, snapshots = (
    _Lazy(n) for n in ("apiobjects", "certs", "etcd", "members", "snapshots")
)
# ---- etcd end ----


# ---- config.yaml ---------------------------------------------------------------------
def _scalar(text: str, where: str) -> object:
    t = text.strip()
    if not t:
        return None
    if t[0] == '"':
        try:
            return json.loads(t)
        except ValueError:
            raise Fatal(f"{where}: bad double-quoted string {t}") from None
    if t[0] == "'":
        if len(t) < 2 or t[-1] != "'":
            raise Fatal(f"{where}: bad single-quoted string {t}")
        return t[1:-1].replace("''", "'")
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if t in ("null", "~", "Null", "NULL"):
        return None
    if re.fullmatch(r"[-+]?[0-9]+", t):
        return int(t)
    if t[0] in "{&*!|>%@`" and t != "{}":
        raise Fatal(f"{where}: unsupported YAML value {t!r} (the stand-in reads a flat subset)")
    return t


def _strip_comment(line: str) -> str:
    out, q = [], ""
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = ""
        elif c in "'\"":
            q = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            break
        out.append(c)
    return "".join(out).rstrip()


def _split_flow(body: str) -> list[str]:
    items, cur, q = [], "", ""
    for c in body:
        if q:
            cur += c
            if c == q:
                q = ""
        elif c in "'\"":
            q = c
            cur += c
        elif c == ",":
            items.append(cur)
            cur = ""
        else:
            cur += c
    if cur.strip():
        items.append(cur)
    return items


# upstream: k3s-io/k3s pkg/configfilearg/parser.go (readConfigFile: YAML); stricter: a flat subset [CONTRACT CF1]
def parse_config(text: str, name: str = CONFIG) -> dict[str, object]:
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise Fatal(f"{name}: {e}") from None
        if not isinstance(data, dict):
            raise Fatal(f"{name}: not a mapping")
        return data
    out: dict[str, object] = {}
    key = None
    for n, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{n}"
        line = _strip_comment(raw)
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        s = line.strip()
        if s.startswith("- ") or s == "-":
            if key is None or not isinstance(out.get(key), list):
                raise Fatal(f"{where}: list item without a key")
            out[key].append(_scalar(s[1:], where))  # type: ignore[union-attr]
            continue
        if line[0] in " \t":
            raise Fatal(f"{where}: nested mappings are not supported by the stand-in")
        m = re.match(r"""^("[^"]*"|'[^']*'|[^:]+?)\s*:(\s+(.*))?$""", line)
        if not m:
            raise Fatal(f"{where}: cannot parse {raw!r}")
        key = str(_scalar(m.group(1), where))
        val = (m.group(3) or "").strip()
        if not val:
            out[key] = []  # block list (or empty value) follows
        elif val.startswith("["):
            if not val.endswith("]"):
                raise Fatal(f"{where}: unterminated flow list")
            out[key] = [_scalar(x, where) for x in _split_flow(val[1:-1])]
        elif val == "{}":
            out[key] = {}
        else:
            out[key] = _scalar(val, where)
    return out


# upstream: k3s-io/k3s pkg/configfilearg/parser.go (dotDFiles, `key+` append); rancher/rke2-docs docs/install/configuration.md [CONTRACT CF2]
def load_config(path: str = CONFIG) -> dict[str, object]:
    cfg: dict[str, object] = {}
    files = [path] if os.path.exists(path) else []
    d = path + ".d"
    if os.path.isdir(d):
        files += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
    for f in files:
        with open(f) as fh:
            for k, v in parse_config(fh.read(), f).items():
                if k.endswith("+") and isinstance(v, list):
                    base = cfg.get(k[:-1], [])
                    cfg[k[:-1]] = (base if isinstance(base, list) else [base]) + v
                else:
                    cfg[k] = v
    return cfg


def cfg_str(cfg: dict[str, object], key: str, default: str = "") -> str:
    v = cfg.get(key, default)
    if v is None or v == []:
        return default
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def cfg_list(cfg: dict[str, object], key: str) -> list[str]:
    v = cfg.get(key)
    if v is None:
        return []
    if isinstance(v, list):
        return [str(x) for x in v]
    return [x for x in str(v).split(",") if x]


def critical_settings(cfg: dict[str, object]) -> dict[str, str]:
    return {k: cfg_str(cfg, k, d) for k, d in sorted(CRITICAL.items())}


# ---- small helpers -------------------------------------------------------------------
def write_file(path: str, data: str, mode: int = 0o600) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def node_arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def node_name(cfg: dict[str, object]) -> str:
    # k3s lower-cases the node name (k3s-io/k3s pkg/util/net.go GetHostnameAndIPs).
    return (cfg_str(cfg, "node-name") or socket.gethostname()).lower()


def node_address(cfg: dict[str, object]) -> str:
    ip = cfg_str(cfg, "node-ip")
    if ip:
        return ip.split(",")[0]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.254", 9))  # no packet is sent; picks the route's source
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def node_password() -> str:
    if os.path.exists(NODE_PASSWORD):
        with open(NODE_PASSWORD) as f:
            return f.read().strip()
    pw = secrets.token_hex(16)
    write_file(NODE_PASSWORD, pw + "\n", 0o600)
    return pw


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def genuine_images() -> dict[str, str]:
    """name -> sha256 of this release's image tarballs (empty if not substituted)."""
    try:
        data = json.loads(IMAGES_JSON)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def image_hashes(names: list[str]) -> dict[str, str]:
    """sha256 of each image tarball, cached per (name, size, mtime, inode) like an
    import that is not repeated for an unchanged file."""
    try:
        with open(IMAGE_HASH_CACHE) as f:
            cache = json.load(f)
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    out: dict[str, str] = {}
    fresh: dict[str, str] = {}
    for n in names:
        p = os.path.join(IMAGES_DIR, n)
        st = os.stat(p)
        key = f"{n}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        digest = cache.get(key) or sha256_file(p)
        out[n] = fresh[key] = digest
    if fresh != cache:
        with contextlib.suppress(OSError):
            write_file(IMAGE_HASH_CACHE, json.dumps(fresh, sort_keys=True), 0o600)
    return out


# upstream: rancher/rke2 pkg/bootstrap/bootstrap.go (Stage, preloadBootstrapFromRuntime); stricter: fails at once [CONTRACT IM1 IM2]
def check_images() -> None:
    """RKE2 in an air gap imports the tarballs in agent/images; without its own
    release's images (no registry to pull from) the node never comes up."""
    found = []
    if os.path.isdir(IMAGES_DIR):
        for f in sorted(os.listdir(IMAGES_DIR)):
            p = os.path.join(IMAGES_DIR, f)
            if f.endswith(IMAGE_SUFFIXES) and os.path.isfile(p) and os.path.getsize(p) > 0:
                found.append(f)
    runtime = f"index.docker.io/rancher/rke2-runtime:{TAG.replace('+', '-')}"
    if not found:
        raise Fatal(
            f"no image tarballs in {IMAGES_DIR} (*.tar.zst, *.tar.gz, *.tar): "
            f"cannot pull {runtime} without a registry (air gap); import the airgap images first"
        )
    genuine = genuine_images()
    by_hash = {v: k for k, v in genuine.items()}
    hashes = image_hashes(found)
    ours = {f: by_hash[h] for f, h in hashes.items() if h in by_hash}
    core = [n for n in CORE_IMAGES if n in genuine]
    if not any(ours[f] in core for f in ours):
        want = " or ".join(f"{n} (sha256 {genuine[n][:16]}...)" for n in core) or (
            "rke2-images (this release has no image list)"
        )
        raise Fatal(
            f"airgap images of {TAG} missing in {IMAGES_DIR}: it needs {want} of {TAG}, "
            f"found only {', '.join(found)}, which are not {TAG}'s images "
            f"(images of another release?); cannot pull {runtime} without a registry "
            f"(air gap); put the image tarballs of {TAG} there"
        )
    for f in found:
        if f not in ours:
            log(
                f"{IMAGES_DIR}/{f} is not an image tarball of {TAG} (left over from "
                "another release?); importing it anyway",
                "warning",
            )
    log(f"Found airgap images: {', '.join(found)}")


# ---- RKE2's rules on names, paths, token, CNI, SELinux, CIS (mk8s issue #22, part A) ----
# Each function models one upstream rule and says which file it reads.
CIS_SYSCTLS = {  # rancher/rke2 pkg/cli/cmds/profile_linux.go: kernelRuntimeParameters
    "vm.overcommit_memory": 1,
    "vm.panic_on_oom": 0,
    "kernel.panic": 10,
    "kernel.panic_on_oops": 1,
}
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"
_RFC1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# upstream: rancher/rke2-docs docs/reference/server_config.md (data-dir, write-kubeconfig, private-registry) [CONTRACT PA1]
def use_config_paths(cfg: dict[str, object]) -> None:
    """Move every path the node uses where config.yaml says: ``data-dir`` (everything
    under /var/lib/rancher/rke2), ``write-kubeconfig``, ``private-registry``; models
    rancher/rke2-docs docs/reference/server_config.md (their defaults)."""
    global DATA_DIR, SERVER_DIR, BOOTSTRAP_FILE, TOKEN_FILE, ETCD_LOG_DIR, AGENT_STATE
    global IMAGES_DIR, IMAGE_HASH_CACHE
    global NODE_VERSION, SNAPSHOT_DIR, KUBECTL, TLS_DIR, AGENT_CA, IMPORTED_IMAGES
    global MANIFESTS_DIR, KUBECONFIG, REGISTRIES
    DATA_DIR = cfg_str(cfg, "data-dir", DATA_DIR).rstrip("/") or "/"
    SERVER_DIR = DATA_DIR + "/server"
    BOOTSTRAP_FILE = SERVER_DIR + "/cred/mk8s-standin-bootstrap.json"
    TOKEN_FILE = SERVER_DIR + "/token"
    ETCD_LOG_DIR = DATA_DIR + "/agent/logs"
    AGENT_STATE = DATA_DIR + "/agent/mk8s-standin-agent.json"
    IMAGES_DIR = DATA_DIR + "/agent/images"
    IMAGE_HASH_CACHE = DATA_DIR + "/agent/mk8s-standin-image-hashes.json"
    NODE_VERSION = DATA_DIR + "/mk8s-standin-version.json"
    SNAPSHOT_DIR = SERVER_DIR + "/db/snapshots"
    KUBECTL = DATA_DIR + "/bin/kubectl"
    TLS_DIR = SERVER_DIR + "/tls"
    AGENT_CA = DATA_DIR + "/agent/server-ca.crt"
    IMPORTED_IMAGES = DATA_DIR + "/agent/mk8s-standin-images.json"
    MANIFESTS_DIR = SERVER_DIR + "/manifests"
    KUBECONFIG = cfg_str(cfg, "write-kubeconfig", KUBECONFIG)
    REGISTRIES = cfg_str(cfg, "private-registry", REGISTRIES)


# upstream: k3s-io/k3s pkg/util/net.go (GetHostnameAndIPs: lower-case); Kubernetes ValidateNodeName [CONTRACT NM1 NM2]
def check_node_name(name: str) -> None:
    """k3s lower-cases the node name (k3s-io/k3s pkg/util/net.go GetHostnameAndIPs;
    node_name() does); the API server then refuses a Node whose name is not an RFC
    1123 subdomain (Kubernetes ValidateNodeName), so the node never registers."""
    if len(name) > 253 or not _RFC1123.fullmatch(name):
        raise Fatal(
            f'unable to register node "{name}" with API server: Node "{name}" is invalid: '
            f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
            "consist of lower case alphanumeric characters, '-' or '.', and must start and "
            "end with an alphanumeric character"
        )


# upstream: rancher/rke2-docs docs/install/airgap.md, docs/security/selinux.md; k3s-io/k3s pkg/agent/containerd/config_linux.go [CONTRACT SE1 SE2]
def check_selinux(cfg: dict[str, object]) -> None:
    """Where SELinux enforces, a tarball install needs the rke2-selinux RPM first
    (rancher/rke2-docs docs/install/airgap.md, "SELinux RPM"): without its policy RKE2
    runs in the wrong context and its services are denied (rancher/rke2#3888). The
    warnings are k3s's (k3s-io/k3s pkg/agent/containerd/config_linux.go); whether the
    policy is there is asked as install.sh asks (rancher/rke2 install.sh,
    do_restorecon_tar: rpm -q --quiet rke2-selinux)."""
    try:
        with open(SELINUX_ENFORCE) as f:
            enforcing = f.read().strip() == "1"
    except OSError:
        return
    selinux = cfg.get("selinux") in (True, "true")
    policy = shutil.which("rpm") is not None and (
        subprocess.run(["rpm", "-q", "--quiet", "rke2-selinux"], check=False).returncode == 0
    )
    if not selinux:
        log(
            "SELinux is enabled on this host, but rke2 has not been started with --selinux - "
            "containerd SELinux support is disabled",
            "warning",
        )
    if enforcing and not policy:
        log(
            "SELinux is enabled for rke2 but process is not running in context "
            "'container_runtime_t', rke2-selinux policy may need to be applied",
            "warning",
        )
        raise Fatal(
            "SELinux is enforcing and the rke2-selinux policy is not installed: permission "
            f"denied writing {DATA_DIR}/server/db (avc: denied); install the rke2-selinux RPM "
            "before installing RKE2"
        )


# upstream: rancher/rke2 pkg/cli/cmds/profile_linux.go (validateProfile), docs/security/hardening_guide.md [CONTRACT CS1 CS2 CS3]
def check_profile(cfg: dict[str, object], role: str) -> None:
    """``profile: cis``: the kernel parameters of CIS_SYSCTLS (read from /proc/sys), then
    (servers) the etcd user and group in /etc/passwd and /etc/group; ``profile: etcd``:
    the etcd user and group only; any other value is fatal. Models rancher/rke2
    pkg/cli/cmds/profile_linux.go (validateProfile) and docs/security/hardening_guide.md."""
    profile = cfg_str(cfg, "profile")
    if not profile:
        log("not running in CIS mode", "warning")
        return
    if profile not in ("cis", "cis-1.23", "etcd"):
        raise Fatal("invalid value provided for --profile flag")
    errors = []
    if profile != "etcd":
        for key, want in CIS_SYSCTLS.items():
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                got = int(f.read().strip())
            if got != want:
                errors.append(f"invalid kernel parameter value {key}={got} - expected {want}")
    if role == "server":
        for what, db in (("user", "/etc/passwd"), ("group", "/etc/group")):
            with open(db) as f:
                if not any(line.startswith("etcd:") for line in f):
                    errors.append(f"missing required: {what}: unknown {what} etcd")
    if errors:
        raise Fatal("\n".join(errors))


def check_host(cfg: dict[str, object], role: str) -> None:
    """What RKE2 checks of its host and config before it starts anything."""
    check_node_name(node_name(cfg))
    check_selinux(cfg)
    check_profile(cfg, role)


# upstream: rancher/rke2-docs docs/security/token.md (first server: short token only) [CONTRACT TK9]
def check_bootstrap_token(token: str, ca_hash: str) -> None:
    """A full ``K10<CA hash>::server:<secret>`` token cannot bootstrap a new cluster
    without custom CA certificates: its hash names a CA that does not exist yet
    (rancher/rke2-docs docs/security/token.md, Server)."""
    want, _ = token_secret(token)
    if want and want != ca_hash:
        raise Fatal(
            "failed to bootstrap cluster data: token CA hash does not match the Cluster CA "
            f"certificate hash: {want} != {ca_hash} (only the short token form can start "
            "the first server of a new cluster)"
        )


def cni_missing() -> dict[str, list[str]]:
    """For each CNI of this release: the images it needs (core + its own) that this
    node's image tarballs lack; {} when the node has no tarballs (it pulls from peers
    or a registry, checked at start by check_node_images)."""
    held: set[str] = set()
    for f in local_image_tarballs():
        held.update(images_of_tarball(f))
    if not held:
        return {}
    return {
        c: [i for i in needed_images([c]) if i not in held] for c in release_images() if c != "core"
    }


# upstream: rancher/rke2-docs docs/reference/server_config.md (cni, default canal); kubelet NetworkReady [CONTRACT CN1]
def network_problem(cni: str, missing: object) -> str:
    """Why the node's network is not ready: RKE2 runs the cluster's CNI (canal unless
    ``cni:`` says otherwise: rancher/rke2-docs docs/reference/server_config.md) from
    images on the node; without them (air gap) the CNI never starts and the kubelet
    reports NetworkReady=false, so the node stays NotReady."""
    if not isinstance(missing, dict) or not missing:
        return ""
    lacking: list[str] = []
    for c in [x for x in cni.split(",") if x and x != "none"] or [CRITICAL["cni"]]:
        lacking += missing.get(c, [f"(no image of CNI {c} in this release)"])
    if not lacking:
        return ""
    return (
        "container runtime network not ready: NetworkReady=false "
        "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not "
        f"initialized (CNI {cni}: {', '.join(lacking[:3])} not on this node, air gap)"
    )


# upstream: rancher/rke2 pkg/cli/cmds/agent.go (system-default-registry deprecated on agents) [CONTRACT RG4]
def agent_registry(cfg: dict[str, object], ac: dict) -> str:
    """An agent's system-default-registry is the one its server hands out; the agent's
    own flag is deprecated and ignored (rancher/rke2 pkg/cli/cmds/agent.go)."""
    if cfg_str(cfg, "system-default-registry"):
        log(
            "system-default-registry: (deprecated) This flag is no longer supported on "
            "agents; using the server's",
            "warning",
        )
    return str(ac.get("system_default_registry") or "")


# ---- versions (RKE2 tags) ------------------------------------------------------------
# upstream: rancher/rke2 docs/adrs/004-rke2-rc-versioning.md (vX.Y.Z[-rcN]+rke2rK) [CONTRACT VS1]
def parse_version(tag: str) -> tuple[int, int, int, int, int, int] | None:
    """Sortable key of ``vMAJOR.MINOR.PATCH[-rcN]+rke2rK`` (rc before final, then
    respins), or None."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)(?:-rc(\d+))?\+rke2r(\d+)", tag)
    if not m:
        return None
    rc = m.group(4)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)),
            0 if rc else 1, int(rc or 0), int(m.group(5)))  # fmt: skip


def minor_of(tag: str) -> str:
    v = parse_version(tag)
    return f"v{v[0]}.{v[1]}" if v else tag


def last_version() -> dict:
    """What this node recorded when it last started (``{}`` on a fresh node)."""
    try:
        with open(NODE_VERSION) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# upstream: none in code; rancher/rke2-docs docs/upgrades/manual.md + docs/upgrades/roll-back.md; stricter [CONTRACT VS2 VS3 VS6]
def check_node_version(role: str, cfg: dict[str, object] | None = None) -> None:
    """Refuse a downgrade (the datastore and kubelet state were written by a newer
    release) and, on a server, a skipped minor (Kubernetes upgrades the control plane
    one minor at a time).  A rollback (VS6) is the one downgrade taken: see
    :func:`rollback_problem`."""
    restored = restored_release()
    if role == "server" and restored and newer(restored, TAG):
        raise Fatal(
            f"refusing to start {TAG}: the datastore was restored from a snapshot taken on "
            f"{restored}; restore a snapshot with the release it was taken on or a newer one"
        )
    last = str(last_version().get("version", ""))
    if not last or last == TAG:
        return
    old, new = parse_version(last), parse_version(TAG)
    if old is None or new is None:
        raise Fatal(f"cannot compare this release {TAG} with {last}, which this node last ran")
    if new < old:
        why = rollback_problem(role, cfg or {}, restored)
        if why:
            raise Fatal(
                f"refusing to start {TAG}: this node last ran {last} (recorded in {NODE_VERSION}); "
                f"downgrading RKE2 is not supported: install {last} or newer ({why})"
            )
        log(f"Rolling this node back from {last} to {TAG}")
        return
    if role == "server" and (new[0], new[1]) > (old[0], old[1] + 1):
        raise Fatal(
            f"refusing to start {TAG}: this server last ran {last}; skipping a minor version "
            f"is not supported (upgrade the control plane one minor at a time: "
            f"{minor_of(last)} -> v{old[0]}.{old[1] + 1} -> {minor_of(TAG)})"
        )
    log(f"Upgrading this node from {last} to {TAG}")


def newer(a: str, b: str) -> bool:
    pa, pb = parse_version(a), parse_version(b)
    return pa is not None and pb is not None and pa > pb


# The newest release among the server Nodes of a datastore restored by a cluster reset,
# kept beside the reset flag until the next normal start (stand-in bookkeeping).
RESTORED_RELEASE = "mk8s-standin-restored-release"


def restored_release() -> str:
    """The release a cluster reset restored this server's datastore from ('' unless
    the reset flag is there: this start follows ``--cluster-reset-restore-path``)."""
    paths = etcd_paths()
    if not os.path.exists(paths.reset_flag):
        return ""
    try:
        with open(os.path.join(paths.db, RESTORED_RELEASE)) as f:
            return f.read().strip()
    except OSError:
        return ""


# upstream: rancher/rke2-docs docs/upgrades/roll-back.md (killall, the older binary, the datastore restored); stricter [CONTRACT VS6]
def rollback_problem(role: str, cfg: dict[str, object], restored: str) -> str:
    """Why this downgrade is no rollback ('' when it is): a server with a datastore
    must start from one a cluster reset restored from a snapshot of this release or
    older; a server without one, and an agent, must join servers that all run this
    release or older (they were rolled back first)."""
    if role == "server" and etcd_paths().initialized():
        if restored:
            return ""
        return "its datastore was not restored from a snapshot of this release"
    url = cfg_str(cfg, "server")
    if not url:
        return "it would start a new cluster"
    body = {"token": cfg_str(cfg, "token"), "role": role}

    def once() -> dict:
        host, port = parse_server_url(url)
        ctx = join_ctx(url, body["token"])
        out = call(host, port, "POST", "/v1-mk8s/agent-config", body, ctx=ctx)
        assert isinstance(out, dict)
        return out

    try:
        answer = agent_retry(once) if role == "agent" else once()
    except (HTTPFail, OSError, ssl.SSLError) as e:
        return f"cannot ask the cluster at {url} what its servers run: {e}"
    versions = [str(v) for v in answer.get("server_versions", [])]
    ahead = sorted({v for v in versions if newer(v, TAG)})
    if not versions or ahead:
        return f"its servers run {', '.join(ahead) or 'nothing known'}"
    return ""


def record_version(role: str) -> None:
    write_file(NODE_VERSION, json.dumps({"version": TAG, "role": role}) + "\n", 0o644)


def running_servers(state: apiobjects.Store, exclude: str) -> dict[str, str]:
    """name -> version of the servers the registry shows running (heartbeat within the
    node grace period), but ``exclude``."""
    t = time.time()
    return {
        n: str(e.get("version", ""))
        for n, e in sorted(state.members().items())
        if n != exclude and t - e.get("heartbeat", 0) < NODE_GRACE
    }


# upstream: kubernetes/website content/en/releases/version-skew-policy.md (not enforced by RKE2); stricter [CONTRACT VS4 VS5]
def skew_problem(role: str, version: str, servers: dict[str, str]) -> str:
    """Why a ``role`` at ``version`` may not run next to these servers ('' if it may):
    kube-apiservers within one minor of each other; a kubelet never newer than the
    oldest kube-apiserver (Kubernetes version skew policy)."""
    mine = parse_version(version)
    if mine is None:
        return f"cannot parse version {version!r}"
    known = {n: v for n, v in ((n, parse_version(v)) for n, v in servers.items()) if v}
    if role == "server":
        for n, v in known.items():
            if v[0] != mine[0] or abs(v[1] - mine[1]) > 1:
                return (
                    f"version skew: server {n} runs {servers[n]}, this server {version}: "
                    "kube-apiserver instances must be within one minor version of each "
                    "other; upgrade one minor at a time"
                )
        return ""
    if known:
        oldest = min(known, key=lambda n: known[n])
        v = known[oldest]
        if (mine[0], mine[1]) > (v[0], v[1]):
            return (
                f"version skew: kubelet {version} is newer than kube-apiserver "
                f"{servers[oldest]} on server {oldest}: a kubelet must not be newer than "
                "the API servers; upgrade the servers first"
            )
    return ""


def sd_notify(msg: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg.encode(), addr)


# upstream: k3s-io/k3s pkg/clientaccess/token.go (setServer: "only https:// URLs are supported"),
# pkg/agent/loadbalancer/utility.go (parseURL: an https URL without a port goes to 443) [CONTRACT TK3]
def parse_server_url(url: str, *, https_only: bool = True) -> tuple[str, int]:
    """(host, port) of ``server:``.  A URL without a host does not start; one that is not
    https:// is refused (an agent retries it for ever: its load balancer keeps the
    scheme and setServer refuses it on each attempt); no port means 443, not 9345."""
    u = urllib.parse.urlsplit(url)
    try:
        port = u.port
    except ValueError:
        raise Fatal(f"invalid server url {url!r}: bad port") from None
    if not u.hostname:
        raise Fatal(f"invalid server url {url!r}")
    if https_only and u.scheme != "https":
        raise Fatal(f"only https:// URLs are supported, invalid scheme: {url}")
    return u.hostname, port or 443


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class HTTPFail(Exception):
    def __init__(
        self, code: int, message: str, details: dict | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.reason = reason or REASONS.get(code, "")

    def status(self) -> dict:
        """A Kubernetes ``Status`` (kubectl prints ``Error from server (REASON): MESSAGE``)."""
        out: dict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


def call(
    host: str,
    port: int,
    method: str,
    path: str,
    body: object = None,
    timeout: float = 5,
    *,
    ctx: ssl.SSLContext,
    headers: dict[str, str] | None = None,
    text: bool = False,
) -> object:
    """HTTPS JSON request to a peer, verified with ``ctx``; raises OSError when it is
    unreachable or its certificate does not verify, HTTPFail on an error answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"https://{_url_host(host)}:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("message", str(e))
        except ValueError:
            msg = str(e)
        raise HTTPFail(e.code, msg) from None
    except urllib.error.URLError as e:
        reason = e.reason
        raise (reason if isinstance(reason, OSError) else OSError(str(reason))) from None
    if text:
        return raw.decode()
    return json.loads(raw) if raw else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---- TLS (certificates: mk8s_standin/certs.py; the ssl module for connections) ------
_CLIENT_CTX: dict[str, ssl.SSLContext] = {}


def client_ctx(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts only the cluster's server CA (hostname checked)."""
    ctx = _CLIENT_CTX.get(ca_pem)
    if ctx is None:
        ctx = ssl.create_default_context(cadata=ca_pem)
        _CLIENT_CTX[ca_pem] = ctx
    return ctx


def insecure_ctx() -> ssl.SSLContext:
    """For fetching /cacerts only: the CA is checked against the token's hash after."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# upstream: k3s-io/k3s pkg/clientaccess/token.go (getCACerts, validateCAHash) [CONTRACT TK1 TK2]
def join_ctx(url: str, token: str) -> ssl.SSLContext:
    """Fetch the cluster CA from the server's /cacerts; with a full token (K10<hash>::)
    refuse it unless its sha256 is the token's hash (RKE2's check), else trust it."""
    host, port = parse_server_url(url)
    pem = call(host, port, "GET", "/cacerts", ctx=insecure_ctx(), text=True)
    assert isinstance(pem, str)
    want = token_secret(token)[0]
    got = hashlib.sha256(pem.encode()).hexdigest()
    if want and got != want:
        raise Fatal(
            f"failed to join cluster at {url}: token CA hash does not match the Cluster CA "
            f"certificate hash: {want} != {got}"
        )
    if "BEGIN CERTIFICATE" not in pem:
        raise Fatal(f"failed to join cluster at {url}: no CA certificate at /cacerts")
    return client_ctx(pem)


# upstream: k3s-io/k3s pkg/daemons/control/deps/deps.go (genServerCerts: SANs of kube-apiserver) [CONTRACT TL1]
def serving_sans(cfg: dict[str, object], name: str, address: str) -> list[str]:
    sans = [address, *cfg_list(cfg, "node-ip"), *cfg_list(cfg, "node-external-ip"), name]
    sans += ["127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default"]
    domain = cfg_str(cfg, "cluster-domain", "cluster.local")
    sans += ["kubernetes.default.svc", f"kubernetes.default.svc.{domain}"]
    cidr = cfg_str(cfg, "service-cidr", CRITICAL["service-cidr"]).split(",")[0]
    with contextlib.suppress(ValueError):
        sans.append(str(ipaddress.ip_network(cidr, strict=False).network_address + 1))
    sans += cfg_list(cfg, "tls-san")
    return list(dict.fromkeys(s for s in sans if s))


# upstream: k3s-io/k3s pkg/clientaccess/token.go (parseToken: K10<ca hash>::<user>:<password> or bare) [CONTRACT TK1]
def token_secret(token: str) -> tuple[str, str]:
    """(ca_hash or '', secret) of a full K10 token or a plain shared secret."""
    m = re.fullmatch(r"K10([0-9a-f]{64})::[^:]+:(.+)", token)
    if m:
        return m.group(1), m.group(2)
    return "", token


# ---- etcd: the cluster's bootstrap data on disk (its copy in etcd: apiobjects) --------
def load_bootstrap() -> dict | None:
    try:
        with open(BOOTSTRAP_FILE) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_bootstrap(cluster: dict) -> None:
    write_file(BOOTSTRAP_FILE, json.dumps(cluster, indent=1, sort_keys=True), 0o600)


def etcd_paths() -> etcd.Paths:
    return etcd.Paths(SERVER_DIR, ETCD_LOG_DIR)


# ---- etcd end ----


def node_annotations(e: dict) -> dict[str, str]:
    out = {"rke2.io/node-args": json.dumps([e["role"]])}
    if e.get("etcd_member"):  # k3s pkg/etcd/metadata_controller.go (the member controller's keys)
        out["etcd.rke2.cattle.io/node-name"] = e["etcd_member"]
        out["etcd.rke2.cattle.io/node-address"] = e.get("address", "")
    return out


# upstream: k3s-io/k3s pkg/etcd/member_controller.go (nodes.OnRemove), rancher/wrangler pkg/generic/remove.go (an OnRemove handler holds the finalizer "wrangler.cattle.io/NAME") [CONTRACT ET9]
ETCD_FINALIZER = "wrangler.cattle.io/managed-etcd-controller"


def node_finalizers(e: dict) -> dict:
    """A server's Node carries the member controller's finalizer, and, once deleted, its
    deletionTimestamp until the controller removed its etcd member."""
    if e.get("role") != "server" or not e.get("etcd_member"):
        return {}
    out: dict = {"finalizers": [ETCD_FINALIZER]}
    if e.get("deleting"):
        when = datetime.datetime.fromtimestamp(e["deleting"], datetime.UTC)
        out["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def ready_condition(e: dict) -> dict:
    """The Node's Ready condition: Unknown once heartbeats stop; False while the node
    posts status but its network is not ready (network_problem: the CNI cannot start)."""
    hb = datetime.datetime.fromtimestamp(e.get("heartbeat", 0), datetime.UTC)
    posting = time.time() - e.get("heartbeat", 0) < NODE_GRACE
    if posting and not e.get("network"):
        status, reason, msg = "True", "KubeletReady", "kubelet is posting ready status"
    elif posting:
        status, reason, msg = "False", "KubeletNotReady", e["network"]
    else:
        status, reason, msg = "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": msg,
        "lastHeartbeatTime": hb.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def node_object(name: str, e: dict) -> dict:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": e.get("arch", "amd64"),
        "beta.kubernetes.io/instance-type": "rke2",
    }
    if e["role"] == "server":
        for r in ("control-plane", "etcd", "master"):
            labels[f"node-role.kubernetes.io/{r}"] = "true"
    for lab in e.get("labels", []):
        k, _, v = lab.partition("=")
        labels[k] = v
    created = datetime.datetime.fromtimestamp(e.get("joined", 0), datetime.UTC)
    uid = hashlib.sha256(f"{name}/{e.get('joined', 0)}".encode()).hexdigest()
    spec: dict = {}
    if e.get("unschedulable"):
        spec["unschedulable"] = True
        spec["taints"] = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}",
            "resourceVersion": str(e.get("rv", 0)),
            "labels": labels,
            "annotations": node_annotations(e),
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **node_finalizers(e),
        },
        "spec": spec,
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": e.get("address", "")},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [ready_condition(e)],
            # upstream: rancher/rke2 pkg/bootstrap/bootstrap.go (Stage: the kubelet of the release that started) [CONTRACT KC6]
            # What the running process registered: RKE2 runs the kubelet it staged at its
            # own start, so a binary replaced on disk without a restart still reports the
            # old version.
            "nodeInfo": {
                "kubeletVersion": e.get("version", TAG),
                "kubeProxyVersion": e.get("version", TAG),
                "architecture": e.get("arch", "amd64"),
                "operatingSystem": "linux",
                "osImage": "mk8s test host",
                "kernelVersion": os.uname().release,
                "containerRuntimeVersion": "containerd://1.7.0-k3s1",
            },
        },
    }


# ---- Kubernetes API shapes -----------------------------------------------------------
class Who:
    """The client a request came from (its certificate's CN and O)."""

    def __init__(self, name: str, groups: list[str]) -> None:
        self.name = name
        self.groups = groups


def peer_identity(conn: object) -> Who | None:
    getpeercert = getattr(conn, "getpeercert", None)
    cert = getpeercert() if getpeercert else None
    if not cert:
        return None
    name, groups = "", []
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                name = v
            elif k == "organizationName":
                groups.append(v)
    return Who(name, groups)


def version_info() -> dict:
    m = re.match(r"v(\d+)\.(\d+)", TAG)
    major, minor = (m.group(1), m.group(2)) if m else ("1", "0")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": TAG,
        "gitCommit": hashlib.sha1(TAG.encode()).hexdigest(),
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.22.8 X:boringcrypto",
        "compiler": "gc",
        "platform": f"linux/{ARCH}",
    }


_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
API_RESOURCES = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
         "verbs": _VERBS, "shortNames": ["no"]},
        {"name": "nodes/status", "singularName": "", "namespaced": False, "kind": "Node",
         "verbs": ["get", "patch", "update"]},
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": _VERBS, "shortNames": ["po"], "categories": ["all"]},
        {"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
         "version": "v1", "kind": "Eviction", "verbs": ["create"]},
    ],
}  # fmt: skip


def _wants_table(accept: str) -> bool:
    """kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` (then plain JSON)."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return params.get("v") in ("v1", "v1beta1")
    return False


# upstream: kubernetes/kubernetes pkg/apis/core/v1/conversion.go (field label conversions); stricter subset [CONTRACT TL6]
def _select(items: list[dict], query: dict[str, list[str]]) -> list[dict]:
    """labelSelector (k=v, k==v, k!=v, k, !k, comma = and) and fieldSelector on
    metadata.name / spec.nodeName / spec.unschedulable; anything else is refused."""
    out = items
    for sel in query.get("labelSelector", []):
        for term in filter(None, (t.strip() for t in sel.split(","))):
            m = re.fullmatch(r"(!?)([A-Za-z0-9./_-]+)(?:\s*(==|=|!=)\s*([A-Za-z0-9._-]*))?", term)
            if not m:
                raise HTTPFail(400, f"unable to parse requirement: {term!r} (stand-in selectors)")
            neg, key, op, val = m.groups()

            def keep(o: dict, neg: str = neg, key: str = key, op: str = op, val: str = val) -> bool:
                labels = o["metadata"].get("labels", {})
                if not op:
                    return (key in labels) != bool(neg)
                return (labels.get(key) == val) == (op != "!=")

            out = [o for o in out if keep(o)]
    fields = {"metadata.name": lambda o: o["metadata"]["name"],
              "spec.nodeName": lambda o: o.get("spec", {}).get("nodeName", ""),
              "spec.unschedulable": lambda o: str(bool(o["spec"].get("unschedulable"))).lower()}  # fmt: skip
    for sel in query.get("fieldSelector", []):
        for term in filter(None, (t.strip() for t in sel.split(","))):
            m = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", term)
            if not m or m.group(1) not in fields:
                raise HTTPFail(400, f'field label not supported: "{term}"')
            get = fields[m.group(1)]
            eq = m.group(2) != "!="
            out = [o for o in out if (get(o) == m.group(3)) == eq]
    return out


def _col(name: str, desc: str, priority: int = 0, fmt: str = "") -> dict:
    return {
        "name": name,
        "type": "string",
        "format": fmt,
        "description": desc,
        "priority": priority,
    }


NODE_COLUMNS = [
    _col("Name", "Name must be unique within a namespace.", 0, "name"),
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _col("Age", "CreationTimestamp is a timestamp representing the server time when this object was created."),
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", "List of addresses reachable to the node.", 1),
    _col("External-IP", "List of addresses reachable to the node.", 1),
    _col("OS-Image", "OS Image reported by the node from /etc/os-release.", 1),
    _col("Kernel-Version", "Kernel Version reported by the node.", 1),
    _col("Container-Runtime", "Container runtime version reported by the node.", 1),
]  # fmt: skip
POD_COLUMNS = [
    _col("Name", "Name must be unique within a namespace.", 0, "name"),
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted."),
    _col("Age", "CreationTimestamp is a timestamp representing the server time when this object was created."),
]  # fmt: skip


def node_status_word(obj: dict) -> str:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"]["conditions"])
    word = "Ready" if ready else "NotReady"
    if obj["spec"].get("unschedulable"):
        word += ",SchedulingDisabled"
    return word


def node_roles(obj: dict) -> str:
    roles = sorted(
        k.split("/", 1)[1]
        for k in obj["metadata"]["labels"]
        if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1]
    )
    return ",".join(roles) or "<none>"


def _row_object(obj: dict, query: dict[str, list[str]]) -> dict | None:
    include = (query.get("includeObject") or ["Metadata"])[0]
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"]}  # fmt: skip


def node_table(items: list[dict], query: dict[str, list[str]]) -> dict:
    rows = []
    for obj in items:
        md, st = obj["metadata"], obj["status"]
        created = datetime.datetime.strptime(md["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
        internal = [a["address"] for a in st["addresses"] if a["type"] == "InternalIP"]
        info = st["nodeInfo"]
        row: dict = {
            "cells": [
                md["name"],
                node_status_word(obj),
                node_roles(obj),
                age(created.replace(tzinfo=datetime.UTC).timestamp()),
                info["kubeletVersion"],
                ",".join(internal) or "<none>",
                "<none>",
                info.get("osImage", ""),
                info.get("kernelVersion", ""),
                info.get("containerRuntimeVersion", ""),
            ]
        }
        ro = _row_object(obj, query)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(time.time_ns() // 1000)},
        "columnDefinitions": NODE_COLUMNS,
        "rows": rows,
    }


def pod_table() -> dict:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(time.time_ns() // 1000)},
        "columnDefinitions": POD_COLUMNS,
        "rows": [],
    }


PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


# upstream: kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/negotiation/errors.go (415) [CONTRACT TL5]
def parse_node_patch(content_type: str, body: object) -> bool | None:
    """The new spec.unschedulable a node patch asks for (None: unchanged).

    Strategic-merge, merge and JSON patches of spec.unschedulable (what kubectl
    cordon/uncordon/drain send); any other field is refused (the stand-in keeps no
    other node state), as is any other content type (415, like the API server)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in PATCH_TYPES:
        raise HTTPFail(
            415,
            "the body of the request was in an unknown format - accepted media types "
            f"include: {', '.join(PATCH_TYPES)}",
        )
    if ctype == "application/json-patch+json":
        if not isinstance(body, list):
            raise HTTPFail(400, "json patch must be a list of operations")
        value: bool | None = None
        for op in body:
            if not isinstance(op, dict) or op.get("path") != "/spec/unschedulable":
                raise HTTPFail(422, f"the stand-in patches only /spec/unschedulable, not {op!r}")
            if op.get("op") in ("add", "replace"):
                if not isinstance(op.get("value"), bool):
                    raise HTTPFail(400, "spec.unschedulable must be a boolean")
                value = op["value"]
            elif op.get("op") == "remove":
                value = False
            else:
                raise HTTPFail(422, f"unsupported json patch operation {op.get('op')!r}")
        return value
    if not isinstance(body, dict):
        raise HTTPFail(400, "patch body must be a JSON object")
    extra = set(body) - {"spec", "metadata"}
    spec = body.get("spec", {})
    meta = body.get("metadata", {})
    if not isinstance(spec, dict) or not isinstance(meta, dict):
        raise HTTPFail(400, "spec and metadata must be objects")
    # kubectl's two-way merge patches may carry these for optimistic concurrency
    extra |= {f"spec.{k}" for k in spec if k != "unschedulable"}
    extra |= {f"metadata.{k}" for k in meta if k not in ("resourceVersion", "uid")}
    if extra:
        raise HTTPFail(422, f"the stand-in patches only spec.unschedulable, not {sorted(extra)}")
    if "unschedulable" not in spec:
        return None
    v = spec["unschedulable"]
    if v is not None and not isinstance(v, bool):
        raise HTTPFail(400, "spec.unschedulable must be a boolean")
    return bool(v)


# ---- server --------------------------------------------------------------------------


# upstream: k3s-io/k3s pkg/cluster/bootstrap.go (compareConfig), rancher/rke2-docs docs/reference/server_config.md [CONTRACT JN2]
def critical_mismatch(mine: dict, theirs: dict) -> str:
    """The refusal of a joining server whose critical settings differ, or ''."""
    bad = [k for k in sorted(mine) if theirs.get(k, CRITICAL.get(k)) != mine[k]]
    if not bad:
        return ""
    detail = "; ".join(f"{k}: cluster has {mine[k]!r}, got {theirs.get(k)!r}" for k in bad)
    return (
        "failed to validate server configuration: critical configuration "
        f"value mismatch between servers: {detail}"
    )


class Server:
    def __init__(
        self, cfg: dict[str, object], state: apiobjects.Store, name: str, member: etcd.Member
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.name = name
        self.member = member
        self.ready = False
        self.join_lock = threading.Lock()
        self.objects = apiobjects.Objects(state.client)
        self._servers: tuple[float, list[str]] = (0.0, [])

    # -- request handling (both ports) --
    def handle(
        self, port: int, method: str, target: str, headers: dict, body: object, who: Who | None
    ) -> tuple:
        try:
            return self._handle(port, method, target, headers, body, who)
        # upstream: etcd-io/etcd raft quorum; kube-apiserver's etcd3 store (quorum reads) [CONTRACT ET4]
        except etcd.EtcdError as e:  # no quorum, an election, etcd down: the API says so
            timeout = "timed out" in str(e) or "not reachable" in str(e)
            raise HTTPFail(504 if timeout else 500, str(e)) from None
        except apiobjects.ApiError as e:
            raise HTTPFail(e.code, e.message, e.details, e.reason) from None

    def _handle(
        self, port: int, method: str, target: str, headers: dict, body: object, who: Who | None
    ) -> tuple:
        path, _, query = target.partition("?")
        if port == API_PORT:
            return self.api(method, path, urllib.parse.parse_qs(query), headers, body, who)
        if not isinstance(body, dict):
            raise HTTPFail(400, "expected a JSON object")
        if path == "/ping":
            return 200, "pong"
        if path == "/cacerts":
            return 200, self.state.cluster.get("ca_pem", "")
        if path == "/db/info":  # k3s pkg/etcd/etcd.go infoHandler: for joining servers
            self.peer_auth(headers)
            return 200, {"members": self.state.client.members()}
        if method != "POST":
            return 404, {"message": "not found"}
        if path == "/v1-mk8s/join":
            return self.join(body)
        if path == "/v1-mk8s/heartbeat":
            return self.heartbeat(body)
        if path == "/v1-mk8s/agent-config":
            return agent_config_answer(self, body)
        if path == "/db/snapshot":  # k3s pkg/etcd/snapshot_handler.go
            self.peer_auth(headers)
            return snapshot_answer(self, body)
        return 404, {"message": "not found"}

    def peer_auth(self, headers: dict) -> None:
        if headers.get("x-mk8s-peer") != sha(self.state.cluster["secret"]):
            raise HTTPFail(401, "Unauthorized")

    # upstream: k3s-io/k3s pkg/server/auth/auth.go (doAuth: 401), rancher/rke2-docs docs/security/token.md [CONTRACT TK4]
    def check_token(self, token: str, role: str) -> None:
        c = self.state.cluster
        if not token:
            raise HTTPFail(401, "401 Unauthorized: no token given")
        ca_hash, secret = token_secret(token)
        if ca_hash and ca_hash != c["ca_hash"]:
            raise HTTPFail(
                401,
                "token CA hash does not match the Cluster CA certificate hash: "
                f"{ca_hash} != {c['ca_hash']}",
            )
        ok = {c["secret"]}
        if role == "agent" and c.get("agent_token"):
            ok = {c["agent_token"]} | ({c["secret"]} if not ca_hash else set())
        if secret not in ok:
            raise HTTPFail(
                401, f"token mismatch: {role} token rejected by the server (401 Unauthorized)"
            )

    def join(self, b: dict) -> tuple:
        role, name = b.get("role"), b.get("name", "")
        self.check_token(b.get("token", ""), role)
        if role == "server":  # the bootstrap check, before any node is looked at
            mismatch = critical_mismatch(self.state.cluster["settings"], b.get("settings", {}))
            if mismatch:
                raise HTTPFail(400, mismatch)
        with self.join_lock, self.state.lock:
            old = self.state.node(name)
            # upstream: k3s-io/k3s pkg/nodepassword/validate.go (GetNodeAuthValidator: 403 on ErrVerifyFailed) [CONTRACT JN1]
            if old and old.get("password") != sha(b.get("password", "")):
                raise HTTPFail(
                    403,
                    f"Node password rejected, duplicate hostname or contents of "
                    f"'{NODE_PASSWORD}' may not match server node-passwd entry "
                    f"(node {name!r} is already registered from {old.get('address')})",
                )
            # upstream: kubernetes/website content/en/releases/version-skew-policy.md; stricter [CONTRACT VS4 VS5]
            skew = skew_problem(
                str(role), str(b.get("version", "")), running_servers(self.state, name)
            )
            if skew:
                raise HTTPFail(400, skew)
            if role == "agent":  # a server registers its Node once its etcd member is voting
                cni = self.state.cluster["settings"].get("cni", "")
                entry = node_entry(b, old) | {"network": network_problem(cni, b.get("cni_missing"))}
                self.state.put(name, entry)
                self.state.heartbeat(name)
        log(f"{role} {name} joined from {b.get('address', '')}")
        cluster = {k: self.state.cluster[k] for k in ("ca_hash", "ca_pem")}
        out = {"servers": [e["address"] for e in self.state.members().values()]}
        if role == "server":  # the bootstrap data and etcd's members (k3s /db/info)
            return 200, out | {
                "cluster": self.state.cluster,
                "members": self.state.client.members(),
            }
        # [CONTRACT CR3] the agent's certificates, signed for this start
        try:
            files = agent_files(self.state.cluster, name, [str(b.get("address", ""))])
        except Fatal as e:
            raise HTTPFail(500, str(e)) from None
        return 200, out | {"cluster": cluster, "agent_files": files}

    def heartbeat(self, b: dict) -> tuple:
        name = b.get("name", "")
        e = self.state.record(name)
        if not e or e.get("password") != sha(b.get("password", "")):
            raise HTTPFail(404, f"node {name} is not registered")
        self.state.heartbeat(name)
        return 200, {"servers": self.server_addresses()}

    def server_addresses(self) -> list[str]:
        """The servers' addresses (what an agent may fail over to), read at most once a
        heartbeat interval."""
        at, addresses = self._servers
        if time.monotonic() - at > HEARTBEAT:
            addresses = [e["address"] for e in self.state.members().values()]
            self._servers = (time.monotonic(), addresses)
        return list(addresses)

    # -- API on 6443 --
    def api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict,
        body: object,
        who: Who | None,
    ) -> tuple:
        # upstream: k3s-io/k3s pkg/daemons/control/server.go (apiServer: anonymous-auth=false, RBAC) [CONTRACT TL3]
        # RKE2 runs kube-apiserver with --anonymous-auth=false: no client certificate, 401.
        if who is None:
            raise HTTPFail(401, "Unauthorized")
        verb = {"GET": "get", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}.get(
            method, method.lower()
        )
        if "system:masters" not in who.groups:
            raise HTTPFail(
                403,
                f'forbidden: User "{who.name}" cannot {verb} path "{path}"',
                {"kind": path.rsplit("/", 1)[-1]},
            )
        path = path.rstrip("/") or "/"
        # upstream: kube-apiserver health endpoints are GET only; stand-in answers 405 otherwise [CONTRACT TL7]
        if path in ("/readyz", "/livez", "/healthz") or re.fullmatch(
            r"/(readyz|livez|healthz)/[a-z0-9-]+", path
        ):
            if method != "GET":
                raise HTTPFail(405, f"{method} is not allowed on {path}")
            return (200, "ok") if self.healthy() else (503, "[-]etcd failed: reason withheld\n")
        table = _wants_table(headers.get("accept", ""))
        if method == "GET":
            if path == "/version":
                return 200, version_info()
            if path == "/api":
                addr = f"{node_address(self.cfg)}:{API_PORT}"
                return 200, {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": addr}
                    ],
                }
            if path == "/apis":
                return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            if path == "/api/v1":
                return 200, dict(
                    API_RESOURCES, resources=API_RESOURCES["resources"] + apiobjects.api_resources()
                )
            if path == "/mk8s/manifests":
                return 200, self.manifests_answer()
            if path == "/mk8s/helm-releases":  # what `helm list -A` would show
                rel = standin_module("helmcontroller").releases(self.state.helm_data())
                return 200, {"kind": "Mk8sStandinHelmReleases", "items": rel}
            if path == "/apis/helm.cattle.io/v1/helmcharts" or re.fullmatch(
                r"/apis/helm\.cattle\.io/v1/namespaces/[^/]+/helmcharts", path
            ):
                out = self.helmcharts()
                ns = path.split("/")[5] if "/namespaces/" in path else ""
                if ns:
                    out["items"] = [i for i in out["items"] if i["metadata"]["namespace"] == ns]
                return 200, out
            if path == "/api/v1/nodes":
                live = sorted(self.state.live().items())
                items = [node_object(n, e) for n, e in live]
                items = _select(items, query)
                if table:
                    return 200, node_table(items, query)
                return 200, {
                    "apiVersion": "v1",
                    "kind": "NodeList",
                    "metadata": {"resourceVersion": str(time.time_ns() // 1000)},
                    "items": items,
                }
            if path == "/api/v1/pods" or re.fullmatch(r"/api/v1/namespaces/[^/]+/pods", path):
                _select([], query)
                # The stand-in runs no workloads: every pod list is empty.
                if table:
                    return 200, pod_table()
                return 200, {
                    "apiVersion": "v1",
                    "kind": "PodList",
                    "metadata": {"resourceVersion": str(time.time_ns() // 1000)},
                    "items": [],
                }
        m = re.fullmatch(r"/apis/helm\.cattle\.io/v1/namespaces/([^/]+)/helmcharts/([^/]+)", path)
        if m and method == "DELETE":
            return self.delete_helmchart(m.group(1), m.group(2))
        m = re.fullmatch(r"/api/v1/nodes/([^/]+)", path)
        if m:
            return self.node_api(m.group(1), method, query, headers, body, table)
        m = re.fullmatch(r"/api/v1/(?:namespaces/([^/]+)/)?([a-z]+)(?:/([^/]+))?", path)
        if m and m.group(2) in apiobjects.RESOURCES:  # objects in etcd (apiobjects)
            return self.objects_api(m.groups(), method, query, headers, body, table)
        if path.startswith(("/api/", "/apis/")) and method not in ("GET",):
            raise HTTPFail(405, f"the stand-in does not support {method} {path}")
        raise HTTPFail(404, "the server could not find the requested resource")

    def node_api(
        self, name: str, method: str, query: dict, headers: dict, body: object, table: bool
    ) -> tuple:
        """GET, DELETE and PATCH (cordon) of /api/v1/nodes/NAME."""
        e = self.state.node(name)
        if not e:
            # upstream: kube-apiserver NotFound Status (kubectl: Error from server (NotFound)) [CONTRACT KC5]
            raise HTTPFail(404, f'nodes "{name}" not found', {"name": name, "kind": "nodes"})
        if method == "GET":
            obj = node_object(name, e)
            return 200, node_table([obj], query) if table else obj
        if method == "DELETE":
            if not delete_node(self, name, e):
                return 200, node_object(name, self.state.node(name) or e)  # terminating
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "kind": "nodes",
                    "uid": node_object(name, e)["metadata"]["uid"],
                },
            }
        if method == "PATCH":
            unschedulable = parse_node_patch(headers.get("content-type", ""), body)
            with self.state.lock:
                e = self.state.node(name) or e
                if unschedulable is not None:
                    e["unschedulable"] = unschedulable
                self.state.put(name, e)
            return 200, node_object(name, self.state.node(name) or e)
        raise HTTPFail(405, f"the stand-in does not support {method} on nodes")

    def objects_api(
        self, where: tuple, method: str, query: dict, headers: dict, body: object, table: bool
    ) -> tuple:
        """/api/v1/[namespaces/NS/]RESOURCE[/NAME] of the objects kept in etcd."""
        ns, resource, name = where[0] or "", where[1], where[2] or ""
        ctype = headers.get("content-type", "")
        code, out = self.objects.handle(method, resource, ns, name, query, body, ctype, _select)
        if table and method == "GET":
            items = out.get("items", [out]) if out.get("kind") != "Status" else []
            include = (query.get("includeObject") or ["Metadata"])[0]
            return code, apiobjects.table(resource, items, include)
        return code, out

    def healthy(self, timeout: float = 0) -> bool:
        """etcd answers a quorum read on this server (kube-apiserver's etcd readiness)."""
        if not self.ready or self.state.client is None:
            return False
        try:
            self.state.client.call("kv/range", {"key": b64("/registry/health")}, timeout=timeout)
        except etcd.EtcdError:
            return False
        return True

    def scan_manifests(self) -> None:
        """Record what this server's manifests dir holds: each new or changed file is
        processed (logged when it fails), removed files are forgotten."""
        mine = dict(self.state.manifests().get(self.name) or {})
        old = mine.get("files", {})
        files: dict[str, dict] = {}
        for n in manifest_files():
            p = os.path.join(MANIFESTS_DIR, n)
            try:
                st = os.stat(p)
                key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
                if old.get(n, {}).get("key") == key:
                    files[n] = old[n]
                    continue
                rec = dict(process_manifest(p), key=key)
            except OSError:
                continue  # gone meanwhile: the next poll sees it
            files[n] = rec
            if rec["status"] == "failed":
                log(f"Failed to process manifest {p}: {rec['error']}", "error")
            else:
                what = ", ".join(
                    f"{o['kind']} {o['namespace']}/{o['name']}"
                    + (f" (chart {o['chart']} {o['version']} installed)" if "chart" in o else "")
                    for o in rec["objects"]
                )
                log(f"Applied manifest {p}: {what or 'no objects'}")
        objects_changed = self.apply_helmcharts(files)
        if files != old or not mine or objects_changed:
            self.state.put_manifests(self.name, {"gen": now_ns(), "files": files})

    # upstream: k3s-io/k3s pkg/deploy/controller.go (listFilesIn: force at start) [CONTRACT HC1 HC2]
    def apply_helmcharts(self, files: dict[str, dict]) -> bool:
        """The deploy controller applies a file's HelmCharts when this server starts and
        when the file changes (k3s-io/k3s pkg/deploy/controller.go); a file removed from
        the directory removes nothing (helmcontroller.py). True when an object changed."""
        helm = standin_module("helmcontroller")
        changed = False
        for n, rec in sorted(files.items()):
            if rec.get("status") != "applied" or APPLIED_FILES.get(n) == rec.get("key"):
                continue
            APPLIED_FILES[n] = rec.get("key", "")
            for o in rec.get("objects", []):
                if o.get("kind") != "HelmChart":
                    continue
                with self.state.lock:
                    data = self.state.helm_data()
                    did, line = helm.apply(data, o, n)
                    self.state.save_helm(data)
                changed = changed or did
                if line:
                    log(line, "error" if o.get("status") == "failed" else "info")
        return changed

    def manifests_loop(self) -> None:
        while True:
            time.sleep(max(0.2, min(HEARTBEAT, 1.0)))
            with contextlib.suppress(Exception):
                self.scan_manifests()

    def manifests_answer(self) -> dict:
        mans = self.state.manifests()
        servers = {}
        for name, m in sorted(mans.items()):
            files = {f: {k: v for k, v in r.items() if k != "key"} for f, r in m["files"].items()}
            servers[name] = {"files": files}
        return {"kind": "Mk8sStandinManifests", "apiVersion": "v1", "servers": servers}

    def helmcharts(self) -> dict:
        """The HelmChart objects (helmcontroller.py): a removed file removes none."""
        objs = standin_module("helmcontroller").objects(self.state.helm_data())
        items = [
            {
                "apiVersion": "helm.cattle.io/v1",
                "kind": "HelmChart",
                "metadata": {"name": o["name"], "namespace": o["namespace"]},
                "spec": {"targetNamespace": o["targetNamespace"]},
                "status": {
                    "chart": o["chart"],
                    "version": o["version"],
                    "state": o["status"],
                    "revision": o["revision"],
                    "file": o["file"],
                    **({"error": o["error"]} if o.get("error") else {}),
                },
            }
            for o in objs
        ]
        return {
            "apiVersion": "helm.cattle.io/v1",
            "kind": "HelmChartList",
            "metadata": {},
            "items": items,
        }

    # upstream: k3s-io/helm-controller pkg/controllers/chart/chart.go (OnRemove) [CONTRACT HC3]
    def delete_helmchart(self, namespace: str, name: str) -> tuple:
        """``kubectl delete helmchart``: helm-controller uninstalls the release."""
        with self.state.lock:
            data = self.state.helm_data()
            gone = standin_module("helmcontroller").delete(data, namespace, name)
            if gone is not None:
                self.state.save_helm(data)
        if gone is None:
            raise HTTPFail(
                404,
                f'helmcharts.helm.cattle.io "{name}" not found',
                {"name": name, "group": "helm.cattle.io", "kind": "helmcharts"},
            )
        log(f"Helm release {gone['targetNamespace']}/{name} uninstalled (HelmChart deleted)")
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                     "details": {"name": name, "group": "helm.cattle.io", "kind": "helmcharts"}}  # fmt: skip

    def self_heartbeat_loop(self) -> None:
        while True:
            with contextlib.suppress(etcd.EtcdError):
                self.state.heartbeat(self.name)
            time.sleep(HEARTBEAT)

    def learners_loop(self) -> None:
        """The etcd leader promotes learners (k3s pkg/etcd/etcd.go manageLearners)."""
        local = etcd.url("127.0.0.1", etcd.CLIENT_PORT)
        while True:
            time.sleep(max(0.1, min(LEARNER_SECONDS / 3, 1.0)))
            with contextlib.suppress(etcd.EtcdError, KeyError, ValueError):
                members.manage_learners(
                    self.state.client, local, LEARNER_SECONDS, LEARNER_STALE, log
                )


def make_handler(server: Server) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # idle keep-alive connections

        def log_message(self, fmt: str, *args: object) -> None:
            pass

        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    raise HTTPFail(400, "the request body is not JSON") from None
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                code, out = server.handle(
                    self.server.server_address[1],
                    self.command,
                    self.path,
                    hdrs,
                    body,
                    peer_identity(self.connection),
                )
            except HTTPFail as e:
                code, out = e.code, e.status()
            except Exception as e:  # keep serving; report the bug
                code, out = 500, HTTPFail(500, f"{type(e).__name__}: {e}").status()
            if code >= 400 and self.server.server_address[1] == API_PORT:
                # what a client asked for and did not get (a gap in the stand-in, or a refusal)
                log(f"API {self.command} {self.path} -> {code}", "debug")
            data = out.encode() if isinstance(out, str) else json.dumps(out).encode()
            ctype = "text/plain; charset=utf-8" if isinstance(out, str) else "application/json"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _do

    return Handler


class TLSServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """HTTPS, with the TLS handshake in the connection's own thread (a slow or bad
    client does not hold up the others)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type, ctx: ssl.SSLContext) -> None:
        super().__init__(addr, handler)
        self.ctx = ctx

    def finish_request(self, request: object, client_address: object) -> None:
        assert isinstance(request, socket.socket)
        request.settimeout(10)
        try:
            conn = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # a failed handshake (e.g. an untrusted client certificate)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# upstream: k3s-io/k3s pkg/server/server.go (writeKubeConfig: octal mode, 0600); stricter: refuses bad mode [CONTRACT TL4]
def kubeconfig_mode(cfg: dict[str, object]) -> int:
    raw = cfg_str(cfg, "write-kubeconfig-mode", "0600")
    try:
        return int(raw, 8)
    except ValueError:
        raise Fatal(f"invalid write-kubeconfig-mode {raw!r}") from None


def install_kubectl() -> None:
    me = os.path.realpath(sys.argv[0])
    os.makedirs(os.path.dirname(KUBECTL), exist_ok=True)
    if os.path.realpath(KUBECTL) != me:
        shutil.copyfile(me, KUBECTL + ".tmp")
        os.chmod(KUBECTL + ".tmp", 0o755)
        os.replace(KUBECTL + ".tmp", KUBECTL)


def new_cluster_cas() -> dict[str, str]:
    out: dict[str, str] = {}
    for key, name in (("ca", "rke2-server-ca"), ("client_ca", "rke2-client-ca"),
                      ("etcd_server_ca", "etcd-server-ca"), ("etcd_peer_ca", "etcd-peer-ca")):  # fmt: skip
        out[key + "_pem"], out[key + "_key"] = certs.new_ca(name)
    return out | {"ca_hash": hashlib.sha256(out["ca_pem"].encode()).hexdigest()}


def leaf(
    name: str, cluster: dict, ca: str, subject: str, kind: str, sans: list[str] | None = None
) -> tuple[str, str]:
    """A leaf certificate under server/tls kept, renewed or made (mk8s_standin/certs.py)."""
    try:
        crt, key, did = certs.ensure_leaf(
            f"{TLS_DIR}/{name}.crt", f"{TLS_DIR}/{name}.key",
            (cluster[ca + "_pem"], cluster[ca + "_key"]), subject, kind, sans,
        )  # fmt: skip
    except certs.CertError as e:
        raise Fatal(f"certificate {name}: {e}") from None
    if did != "kept":
        log(f"Certificate {TLS_DIR}/{name}.crt {did}")
    return crt, key


def agent_files(cluster: dict, node: str, ips: list[str]) -> dict[str, str]:
    """The certificate files this server hands a node's agent (mk8s_standin/certs.py)."""
    try:
        return certs.agent_files(  # type: ignore[no-any-return]
            (cluster["ca_pem"], cluster["ca_key"]),
            (cluster["client_ca_pem"], cluster["client_ca_key"]),
            TLS_DIR, node, ips,
        )  # fmt: skip
    except certs.CertError as e:
        raise Fatal(f"agent certificates for {node}: {e}") from None


def write_agent_certs(files: dict[str, str]) -> None:
    """The agent's certificate files under agent/ (k3s pkg/agent/config/config.go get)."""
    try:
        certs.write_agent_files(DATA_DIR + "/agent", files)
    except certs.CertError as e:
        raise Fatal(str(e)) from None


# upstream: rancher/rke2-docs docs/security/token.md (server/token, agent-token), docs/cluster_access.md [CONTRACT TK8 TL4]
def write_server_files(
    cluster: dict, cfg: dict[str, object], name: str, kc_mode: int
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Token files, the TLS files (CAs; the serving and admin certificates, kept until
    they need renewing) and the admin kubeconfig.  Returns the contexts for 9345, 6443."""
    secret = cluster["secret"]
    token = f"K10{cluster['ca_hash']}::server:{secret}"
    write_file(SERVER_DIR + "/node-token", token + "\n", 0o600)
    write_file(TOKEN_FILE, token + "\n", 0o600)
    if cluster.get("agent_token"):
        write_file(
            SERVER_DIR + "/agent-token",
            f"K10{cluster['ca_hash']}::node:{cluster['agent_token']}\n",
            0o600,
        )
    for ca, key in (("server-ca", "ca"), ("client-ca", "client_ca")):
        write_file(f"{TLS_DIR}/{ca}.crt", cluster[key + "_pem"], 0o644)
        write_file(f"{TLS_DIR}/{ca}.key", cluster[key + "_key"], 0o600)
    sans = serving_sans(cfg, name, node_address(cfg))
    leaf("serving-kube-apiserver", cluster, "ca", "/CN=kube-apiserver", "serving", sans)
    admin_crt, admin_key = leaf(
        "client-admin", cluster, "client_ca", "/O=system:masters/CN=system:admin", "client"
    )
    # what agents get handed (k3s pkg/daemons/control/deps/deps.go genClientCerts)
    leaf("client-kube-proxy", cluster, "client_ca", "/CN=system:kube-proxy", "client")
    leaf("client-rke2-controller", cluster, "client_ca", "/CN=system:rke2-controller", "client")
    write_agent_certs(agent_files(cluster, name, [node_address(cfg)]))
    kubeconfig = (
        "apiVersion: v1\n"
        "clusters:\n"
        "- cluster:\n"
        f"    certificate-authority-data: {b64(cluster['ca_pem'])}\n"
        f"    server: https://127.0.0.1:{API_PORT}\n"
        "  name: default\n"
        "contexts:\n"
        "- context:\n"
        "    cluster: default\n"
        "    user: default\n"
        "  name: default\n"
        "current-context: default\n"
        "kind: Config\n"
        "preferences: {}\n"
        "users:\n"
        "- name: default\n"
        "  user:\n"
        f"    client-certificate-data: {b64(admin_crt + cluster['client_ca_pem'])}\n"
        f"    client-key-data: {b64(admin_key)}\n"
    )
    write_file(KUBECONFIG, kubeconfig, kc_mode)
    install_kubectl()
    crt, key = f"{TLS_DIR}/serving-kube-apiserver.crt", f"{TLS_DIR}/serving-kube-apiserver.key"
    supervisor = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    supervisor.minimum_version = ssl.TLSVersion.TLSv1_2
    supervisor.load_cert_chain(crt, key)
    api = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    api.minimum_version = ssl.TLSVersion.TLSv1_2
    api.load_cert_chain(crt, key)
    api.load_verify_locations(cadata=cluster["client_ca_pem"])
    api.verify_mode = ssl.CERT_OPTIONAL  # none: 401 (no anonymous access); bad: handshake fails
    return supervisor, api


def serve(server: Server, contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    handler = make_handler(server)
    for port, ctx in zip((SUPERVISOR_PORT, API_PORT), contexts, strict=True):
        try:
            httpd = TLSServer(("0.0.0.0", port), handler, ctx)
        except OSError as e:
            raise Fatal(f"listen tcp 0.0.0.0:{port}: bind: {e.strerror}") from None
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    threading.Thread(target=server.learners_loop, daemon=True).start()
    threading.Thread(target=server.self_heartbeat_loop, daemon=True).start()
    serve_mirror(server, contexts[0])
    rewrite_helmcharts(server.cfg)
    server.scan_manifests()
    threading.Thread(target=server.manifests_loop, daemon=True).start()


# upstream: k3s-io/k3s pkg/cluster/bootstrap.go (a joining server's bootstrap error ends it); differs: retried [CONTRACT JN5]
def retry_join(url: str, body: dict) -> tuple[dict, ssl.SSLContext]:
    """A joining server: fetch and check the cluster CA, then POST the join over
    verified TLS, retrying while the server is unreachable (bounded; an agent retries
    for ever: agent_retry).  Returns the answer and the context."""
    host, port = parse_server_url(url)
    deadline = time.monotonic() + JOIN_TIMEOUT
    last = ""
    while True:
        try:
            ctx = join_ctx(url, body["token"])
            out = call(host, port, "POST", "/v1-mk8s/join", body, timeout=5, ctx=ctx)
            assert isinstance(out, dict)
            return out, ctx
        except HTTPFail as e:
            raise Fatal(f"failed to join cluster at {url}: {e.message}") from None
        except ssl.SSLCertVerificationError as e:
            raise Fatal(f"failed to join cluster at {url}: {e}") from None
        except OSError as e:
            last = str(e)
            log(
                f"Failed to validate connection to cluster at {url}: {last}; retrying",
                "warning",
            )
        if time.monotonic() > deadline:
            raise Fatal(
                f"cannot reach server {url}: {last} "
                f"(gave up after {JOIN_TIMEOUT:g}s; is the server running and port {port} open?)"
            )
        time.sleep(1)


# ---- etcd: the server's datastore (k3s pkg/etcd/etcd.go, pkg/cluster/managed.go) -------
RUNNING: dict[str, etcd.Member] = {}  # the etcd member this process runs


def write_etcd_files(cluster: dict, name: str, address: str) -> None:
    """server/tls/etcd: the etcd CAs and this server's etcd certificates (k3s
    pkg/daemons/control/deps/deps.go: client, server-client, peer-server-client)."""
    for ca, key in (("server-ca", "etcd_server_ca"), ("peer-ca", "etcd_peer_ca")):
        write_file(f"{TLS_DIR}/etcd/{ca}.crt", cluster[key + "_pem"], 0o644)
        write_file(f"{TLS_DIR}/etcd/{ca}.key", cluster[key + "_key"], 0o600)
    sans = list(dict.fromkeys([address, "127.0.0.1", "::1", "localhost", name]))
    leaf("etcd/client", cluster, "etcd_server_ca", "/CN=etcd-client", "client")
    leaf("etcd/server-client", cluster, "etcd_server_ca", "/CN=etcd-server", "peer", sans)
    leaf("etcd/peer-server-client", cluster, "etcd_peer_ca", "/CN=etcd-peer", "peer", sans)


def local_client() -> etcd.Client:
    return etcd.Client([etcd.url("127.0.0.1", etcd.CLIENT_PORT)], etcd_paths(), timeout=3)


def start_member(
    member: etcd.Member, name: str, cluster: str = "", state: str = "new", reset: bool = False
) -> None:
    try:
        member.start(name, cluster, state, reset)
    except (etcd.EtcdError, OSError) as e:
        raise Fatal(f"starting etcd: {e}") from None
    RUNNING["member"] = member


def wait_member(member: etcd.Member, timeout: float) -> None:
    try:
        member.wait_ready(local_client(), timeout)
    except etcd.EtcdError as e:
        hint = ""
        if "removed from the cluster" in str(e) or "cluster reset" in str(e):
            hint = (
                f"; back up and delete {SERVER_DIR}/db on this server and start rke2-server "
                "again to rejoin the cluster"
            )
        raise Fatal(f"{e}{hint}") from None


def new_datastore(cfg: dict[str, object], member: etcd.Member, name: str, token: str) -> dict:
    """The first server: a new etcd cluster of one member.  CAs already on disk are reused
    (rke2-docs security/certificates.md, custom CAs)."""
    # No server: and no datastore: a NEW cluster (rancher/rke2-docs docs/install/ha.md),
    # whatever other servers already run.
    log("Bootstrapping a new cluster (no server: in config)")
    disk = load_bootstrap() or {}
    cas = {k: v for k, v in disk.items() if k.endswith(("_pem", "_key")) or k == "ca_hash"}
    cluster = {
        **(cas or new_cluster_cas()),
        "secret": token_secret(token)[1] if token else disk.get("secret") or secrets.token_hex(32),
        "agent_token": cfg_str(cfg, "agent-token"),
        "settings": critical_settings(cfg),
    }
    check_bootstrap_token(token, cluster["ca_hash"])  # [CONTRACT TK9]
    time.sleep(START_SECONDS)
    save_bootstrap(cluster)
    write_etcd_files(cluster, name, member.address)
    mname = etcd.member_name(etcd_paths(), name, force=True)
    log("Starting etcd for new cluster")
    start_member(member, mname, f"{mname}={member.peer_url}", "new")
    wait_member(member, 60)
    client = local_client()
    client.put(apiobjects.bootstrap_key(cluster["secret"]), json.dumps(cluster).encode())
    for ns in apiobjects.SYSTEM_NAMESPACES:
        client.txn_put(
            f"/registry/namespaces/{ns}", json.dumps(apiobjects.new_namespace(ns)).encode(), 0
        )
    return cluster


def join_datastore(cfg: dict[str, object], member: etcd.Member, name: str, body: dict) -> dict:
    """A joining server: the bootstrap data and etcd's members from the server it joins,
    then this server as an etcd learner until the leader promotes it (k3s ``join``)."""
    url = cfg_str(cfg, "server")
    # upstream: k3s-io/k3s pkg/cluster/managed.go (RKE2_TOKEN is required to join a cluster) [CONTRACT TK5]
    if not body["token"]:
        raise Fatal("--token is required when joining a server (server: is set)")
    log(f"Joining the cluster at {url} as server {name}")
    out, _ = retry_join(url, body)
    cluster = out["cluster"]
    save_bootstrap(cluster)
    write_etcd_files(cluster, name, member.address)
    urls = [
        u
        for m in out.get("members", [])
        if not m.get("isLearner")
        for u in m.get("clientURLs", [])
        if u != member.client_url
    ]
    if not urls:
        raise Fatal("ETCD join failed: the cluster has no voting etcd member to join")
    paths = etcd_paths()
    mname = etcd.member_name(paths, name) or etcd.member_name(paths, name, force=True)
    log(f"Adding member {mname}={member.peer_url} to etcd cluster as a learner")
    try:
        initial = members.join_cluster(etcd.Client(urls, paths), mname, name, member.peer_url)
    except etcd.EtcdError as e:
        if "duplicate node name" in str(e):
            with contextlib.suppress(OSError):
                os.unlink(paths.name)
        raise Fatal(f"ETCD join failed: {e}") from None
    log(f"Starting etcd to join cluster with members [{initial}]")
    start_member(member, mname, initial, "existing")
    wait_member(member, max(60.0, 20 * LEARNER_SECONDS))
    return cluster


# upstream: k3s-io/k3s pkg/etcd/etcd.go (Start: IsInitialized, existing member) [CONTRACT ET1]
def restart_datastore(member: etcd.Member, name: str, token: str) -> tuple[dict, bool]:
    """A server with etcd data: start it as the member it is (k3s ``IsInitialized``);
    (bootstrap data, whether it was just reset)."""
    paths = etcd_paths()
    cluster = load_bootstrap()
    if not cluster:
        raise Fatal(f"etcd data in {paths.etcd} but no bootstrap data in {BOOTSTRAP_FILE}")
    # upstream: k3s-io/k3s pkg/cluster/storage.go (getBootstrapKeyFromStorage) [CONTRACT TK7]
    if token and token_secret(token)[1] != cluster["secret"]:
        raise Fatal(
            "bootstrap data already found and encrypted with different token: "
            "the token in config.yaml does not match this server's datastore"
        )
    was_reset = os.path.exists(paths.reset_flag)
    with contextlib.suppress(FileNotFoundError):  # k3s managed.go: removed at a normal start
        os.unlink(paths.reset_flag)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(paths.db, RESTORED_RELEASE))
    write_etcd_files(cluster, name, member.address)
    mname = etcd.member_name(paths, name) or etcd.member_name(paths, name, force=True)
    log("Starting from existing datastore (etcd for existing cluster member)")
    start_member(member, mname)
    wait_member(member, 0)
    return cluster, was_reset


def node_entry(b: dict, old: dict | None) -> dict:
    """A node's record from what it registers with (the Node outlives a kubelet restart)."""
    entry = {
        "role": b["role"],
        "address": b.get("address", ""),
        "joined": old["joined"] if old else time.time(),
        "password": sha(b.get("password", "")),
        "labels": b.get("labels", []),
        "version": b.get("version", TAG),
        "arch": b.get("arch", "amd64"),
    }
    if old and old.get("unschedulable"):
        entry["unschedulable"] = True
    return entry


def register_server(store: apiobjects.Store, body: dict, member: str, was_reset: bool) -> None:
    """This server's Node, with its etcd member's name (k3s metadata_controller.go).  After
    a cluster reset the old node password is forgotten (k3s managed.go
    deleteNodePasswdSecret), so a replacement host may take the name."""
    name = body["name"]
    old = store.node(name)
    if old and old.get("password") != sha(body["password"]) and not was_reset:
        raise Fatal(
            f"Node password rejected, duplicate hostname or contents of '{NODE_PASSWORD}' may "
            f"not match server node-passwd entry (node {name!r} is registered from "
            f"{old.get('address')})"
        )
    network = network_problem(store.cluster["settings"].get("cni", ""), body.get("cni_missing"))
    store.put(name, node_entry(body, old) | {"etcd_member": member, "network": network})
    store.heartbeat(name)


# upstream: k3s-io/k3s pkg/etcd/member_controller.go (onRemove -> RemovePeer) [CONTRACT ET6 ET9]
def delete_node(server: Server, name: str, e: dict, patience: float = 6) -> bool:
    """Delete a Node; True once it is gone.  A server's Node goes only after its etcd
    member was removed: k3s's member controller (pkg/etcd/member_controller.go onRemove
    -> RemovePeer) is a wrangler OnRemove handler, whose finalizer keeps the Node
    (with a deletionTimestamp) until the handler succeeds; it retries until then.  The
    stand-in tries for ``patience`` seconds before it answers (etcd refuses to remove a
    member until the others have been connected for 5 s, so a test acting seconds after
    a join sees what a cluster joined minutes earlier does), then goes on retrying in
    the background; the answer is then the terminating Node, as the API server's is."""
    member, address = e.get("etcd_member"), e.get("address", "")
    if e["role"] != "server" or not member:
        server.state.delete(name)
        return True
    with server.state.lock:
        cur = server.state.node(name) or e
        if not cur.get("deleting"):
            server.state.put(name, dict(cur, deleting=time.time()))

    def remove(patience: float) -> bool:
        deadline = time.monotonic() + patience
        while True:
            try:
                log(f"Removing name={member} address={address} from etcd")
                members.remove_peer(server.state.client, member, address)
                server.state.delete(name)  # the finalizer is lifted: the Node goes
                return True
            except etcd.EtcdError as ex:  # e.g. "unhealthy cluster" or no quorum
                if time.monotonic() > deadline:
                    log(f"failed to remove etcd member {member}: {ex}", "error")
                    return False
                time.sleep(0.5)

    if remove(patience):
        return True
    threading.Thread(target=remove, args=(600,), daemon=True).start()
    return False


# upstream: k3s-io/k3s pkg/etcd/snapshot.go (Snapshot: NAME-NODE-UNIXTIME), snapshot_handler.go [CONTRACT ES2 ES4]
def snapshot_answer(server: Server, b: dict) -> tuple:
    """``POST /db/snapshot`` (k3s pkg/etcd/snapshot_handler.go): save, list or delete."""
    if not server.ready:
        raise HTTPFail(503, "etcd is not ready yet")
    op = b.get("operation")
    where = str(b.get("dir") or cfg_str(server.cfg, "etcd-snapshot-dir") or SNAPSHOT_DIR)
    if not where.startswith("/"):
        raise HTTPFail(400, f"snapshot dir must be absolute: {where!r}")
    if op == "list":
        return 200, {"items": snapshots.list_snapshots(where)}
    if op == "delete":
        return 200, {
            "deleted": snapshots.delete_snapshots(where, [str(n) for n in b.get("names", [])])
        }
    if op != "save":
        raise HTTPFail(400, f"unknown etcd snapshot operation {op!r}")
    name = str(b.get("name", ""))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or len(name) > 200:
        raise HTTPFail(400, f"invalid snapshot name {name!r}")
    if where == SNAPSHOT_DIR:  # only the default dir is created (k3s snapshotDir)
        os.makedirs(where, mode=0o700, exist_ok=True)
    elif not os.path.isdir(where):
        raise HTTPFail(
            500, f"failed to get etcd-snapshot-dir: stat {where}: no such file or directory"
        )
    fname = f"{name}-{server.name}-{int(time.time())}"
    path = os.path.join(where, fname)
    log(f"Saving etcd snapshot to {path}")
    try:
        snapshots.snapshot_save(etcd_paths(), path)
    except etcd.EtcdError as e:
        log(f"Failed to take etcd snapshot: {e}", "error")
        raise HTTPFail(500, f"Failed to take etcd snapshot: {e}") from None
    os.chmod(path, 0o600)
    return 200, {"created": [fname], "path": path, "size": os.path.getsize(path)}


def run_server(cfg: dict[str, object]) -> None:
    check_node_version("server", cfg)
    check_node_images(cfg, "server")
    import_images()
    watch_images()
    load_start_inputs()
    name = node_name(cfg)
    token = cfg_str(cfg, "token")
    body = {
        "role": "server",
        "name": name,
        "address": node_address(cfg),
        "token": token,
        "password": node_password(),
        "settings": critical_settings(cfg),
        "labels": cfg_list(cfg, "node-label"),
        "version": TAG,
        "arch": node_arch(),
        "cni_missing": cni_missing(),
    }
    member = etcd.Member(etcd_paths(), body["address"])
    was_reset = False
    if etcd_paths().initialized():
        cluster, was_reset = restart_datastore(member, name, token)
    # upstream: rancher/rke2-docs docs/install/ha.md (no server:, no datastore: new cluster) [CONTRACT BS1]
    elif not cfg_str(cfg, "server"):
        cluster = new_datastore(cfg, member, name, token)
    else:
        cluster = join_datastore(cfg, member, name, body)
    store = apiobjects.Store(local_client(), cluster)
    # upstream: kubernetes/website content/en/releases/version-skew-policy.md; stricter [CONTRACT VS4]
    skew = skew_problem("server", TAG, running_servers(store, name))
    if skew:
        raise Fatal(f"refusing to start kube-apiserver {TAG}: {skew}")
    register_server(store, body, etcd.member_name(etcd_paths(), name), was_reset)
    server = Server(cfg, store, name, member)
    serve(server, write_server_files(cluster, cfg, name, kubeconfig_mode(cfg)))
    member.watch(etcd_exited)
    server.ready = True


def etcd_exited(why: str) -> None:
    """rke2 server exits with its etcd (k3s: "etcd exited"), after a moment for the answer
    in flight (the request that removed this member, for one)."""
    log(f"etcd exited: {why}", "fatal")
    time.sleep(0.5)
    os._exit(1)


# upstream: k3s-io/k3s pkg/etcd/etcd.go (Reset, Restore), pkg/cluster/managed.go [CONTRACT ET8]
def cluster_reset(cfg: dict[str, object]) -> int:
    """``rke2 server --cluster-reset [--cluster-reset-restore-path=FILE]`` (k3s
    pkg/cluster/managed.go ``start``, pkg/etcd/etcd.go ``Reset``, ``Restore``): etcd becomes
    a one-member cluster of this server, restored from FILE when given; then exit."""
    paths = etcd_paths()
    restore = cfg_str(cfg, "cluster-reset-restore-path")
    check_reset(paths, restore, cfg_str(cfg, "token"))
    token = cfg_str(cfg, "token") or read_token_file()
    secret = token_secret(token)[1]
    name, address = node_name(cfg), node_address(cfg)
    disk = load_bootstrap()
    temp = disk or {**new_cluster_cas(), "secret": secret, "settings": critical_settings(cfg)}
    write_etcd_files(temp, name, address)
    member = etcd.Member(paths, address)
    mname = f"{name}-{secrets.token_hex(4)}"  # a new member name (k3s setName(true))
    if restore:
        log(f"Restoring etcd snapshot {restore}; the current database moves to {paths.etcd}-old-*")
        try:
            snapshots.snapshot_restore(paths, restore, mname, member.peer_url)
        except etcd.EtcdError as e:
            raise Fatal(f"etcd: snapshot restore failed: {e}") from None
    etcd.member_name(paths, name, value=mname)
    write_file(paths.reset_flag, "", 0o600)  # k3s: touch a file to avoid multiple resets
    start_member(member, mname, f"{mname}={member.peer_url}", "new", reset=True)
    wait_member(member, 60)
    cluster = stored_bootstrap(local_client(), secret) or temp
    if restore:  # which release wrote the restored datastore (VS6)
        store = apiobjects.Store(local_client(), cluster)
        written = [str(e.get("version", "")) for e in store.members().values()]
        newest = ""
        for v in written:
            if parse_version(v) is not None and (not newest or newer(v, newest)):
                newest = v
        write_file(os.path.join(paths.db, RESTORED_RELEASE), newest + "\n", 0o600)
    if cluster != disk:
        if disk and os.path.isdir(TLS_DIR):
            backup = f"{SERVER_DIR}/tls-{int(time.time())}"
            shutil.copytree(TLS_DIR, backup, dirs_exist_ok=True)
            log(f"Cluster reset: backing up certificates directory to {backup}")
        save_bootstrap(cluster)
    member.stop()
    log(
        "Managed etcd cluster membership has been reset, restart without --cluster-reset "
        "flag now. Backup and delete ${datadir}/server/db on each peer etcd server and "
        "rejoin the nodes"
    )
    return 0


def read_token_file() -> str:
    try:
        with open(TOKEN_FILE) as f:
            return f.read().strip()
    except OSError:
        return ""


# upstream: k3s-io/k3s pkg/cli/server/server.go, pkg/cluster/managed.go (start), pkg/etcd/etcd.go (Reset) [CONTRACT ET7]
def check_reset(paths: etcd.Paths, restore: str, token: str) -> None:
    """What k3s refuses before a cluster reset touches anything."""
    if restore and not token and not os.path.exists(TOKEN_FILE):
        raise Fatal(f"{TOKEN_FILE} does not exist, please pass --token to complete the restoration")
    if not restore and os.path.exists(paths.reset_flag):
        raise Fatal(
            "cluster-reset was successfully performed, please remove the cluster-reset flag "
            "and start rke2 normally, if you need to perform another cluster reset, you must "
            f"first manually delete the {paths.reset_flag} file"
        )
    if not restore and not paths.initialized():
        raise Fatal(f"etcd: no etcd data in {paths.etcd} to reset; nothing was changed")
    for port in (SUPERVISOR_PORT, etcd.CLIENT_PORT):  # RKE2 must be stopped first
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError as e:
                raise Fatal(
                    f"listen tcp 0.0.0.0:{port}: bind: {e.strerror} (stop rke2-server first)"
                ) from None
    if restore and not os.path.exists(restore):
        raise Fatal(f"etcd: snapshot path does not exist: {restore}")
    if restore and os.path.isdir(restore):
        raise Fatal(f"etcd: snapshot path must be a file, not a directory: {restore}")


def stored_bootstrap(client: etcd.Client, secret: str) -> dict | None:
    """The bootstrap data in etcd for this token (k3s pkg/cluster/storage.go
    getBootstrapKeyFromStorage): None when there is none."""
    kvs = client.range(apiobjects.BOOTSTRAP, prefix=True)
    if len(kvs) > 1:
        raise Fatal("found multiple bootstrap keys in storage")
    if not kvs:
        return None
    if kvs[0]["key"] != apiobjects.bootstrap_key(secret):
        raise Fatal("bootstrap data already found and encrypted with different token")
    return dict(json.loads(kvs[0]["value"]))


# ---- etcd end ----


# upstream: k3s-io/k3s pkg/cli/agent/agent.go (Run: --token/--server required) [CONTRACT TK6]
def run_agent(cfg: dict[str, object]) -> None:
    check_node_version("agent", cfg)
    url = cfg_str(cfg, "server")
    token = agent_token(cfg)
    if not url:
        raise Fatal("--server is required")
    if not token:
        raise Fatal("--token is required")
    parse_server_url(url, https_only=False)  # no host: the agent's load balancer fails
    check_node_images(cfg, "agent")
    import_images()
    watch_images()
    load_start_inputs()
    name = node_name(cfg)
    password = node_password()
    body = {
        "role": "agent",
        "name": name,
        "address": node_address(cfg),
        "token": token,
        "password": password,
        "labels": cfg_list(cfg, "node-label"),
        "version": TAG,
        "arch": node_arch(),
        "cni_missing": cni_missing(),
    }
    log(f"Joining the cluster at {url} as agent {name}")
    out, _ = agent_retry(lambda: join_once(url, body))
    ca_pem = out["cluster"]["ca_pem"]
    write_agent_certs(out.get("agent_files") or {})
    write_file(AGENT_CA, ca_pem, 0o644)
    install_kubectl()
    ctx = client_ctx(ca_pem)
    servers = out.get("servers") or [parse_server_url(url)[0]]
    write_file(AGENT_STATE, json.dumps({"servers": servers}), 0o600)
    record_version("agent")
    log(f"Node registered; kubelet {TAG} is posting ready status")
    sd_notify("READY=1")
    i = 0
    while True:
        time.sleep(HEARTBEAT)
        for _ in range(len(servers)):
            addr = servers[i % len(servers)]
            try:
                r = call(
                    addr, SUPERVISOR_PORT, "POST", "/v1-mk8s/heartbeat", body, timeout=2, ctx=ctx
                )
                if isinstance(r, dict) and r.get("servers"):
                    servers = r["servers"]
                break
            except (OSError, HTTPFail, ValueError):
                i += 1


# upstream: rancher/rke2 pkg/cli/cmds/agent.go (an agent has token and token-file, no agent-token);
# k3s-io/k3s pkg/configfilearg/parser.go (a key that is no flag is dropped with a warning) [CONTRACT TK6]
SERVER_ONLY_KEYS = ("agent-token", "agent-token-file")


def agent_token(cfg: dict[str, object]) -> str:
    """The agent's join token: ``token`` only (``agent-token`` is a server flag that an
    agent's config parser drops: "Unknown flag --agent-token found in config.yaml")."""
    return cfg_str(cfg, "token")


def warn_dropped_keys(cfg: dict[str, object]) -> None:
    for key in SERVER_ONLY_KEYS:
        if key in cfg:
            log(f"Unknown flag --{key} found in config.yaml, skipping", "warning")


def join_once(url: str, body: dict) -> tuple[dict, ssl.SSLContext]:
    """One join: fetch and check the cluster CA, then POST the join over verified TLS."""
    host, port = parse_server_url(url)
    ctx = join_ctx(url, body["token"])
    out = call(host, port, "POST", "/v1-mk8s/join", body, timeout=5, ctx=ctx)
    assert isinstance(out, dict)
    return out, ctx


R = typing.TypeVar("R")


# upstream: k3s-io/k3s pkg/agent/config/config.go (Get: retried every 5 s until it works, for ever) [CONTRACT JN4]
def agent_retry(attempt: typing.Callable[[], R]) -> R:
    """An agent's way with its server: whatever the refusal (unreachable, a CA hash or
    certificate that does not verify, 401 for the token, 403 for the node password, a
    URL that is not https), log it and try again, for ever.  With Type=notify and
    TimeoutStartSec=0, `systemctl start rke2-agent` then never returns."""
    while True:
        try:
            return attempt()
        except HTTPFail as e:
            reason = e.message
        except ssl.SSLCertVerificationError as e:
            reason = f"CA cert validation failed: {e}"
        except (Fatal, OSError) as e:
            reason = str(e)
        log(f"Waiting to retrieve agent configuration; server is not ready: {reason}")
        time.sleep(AGENT_RETRY)


# ---- images without local tarballs: embedded registry mirror and a private registry ----
# Servers mode (spec.images.distribution: servers): a server with `embedded-registry:
# true` records that in its node entry (in etcd, like the cluster state) and answers on
# TCP 5001 (HTTPS, its serving certificate from the cluster's server CA, no client
# certificate) `GET /v1-mk8s/images` with the images its local tarballs hold.  An
# agent without local tarballs asks a server for the cluster's image settings
# (`POST /v1-mk8s/agent-config` on 9345, token checked) before it joins, and starts
# only when the cluster runs the embedded mirror, its registries.yaml lists docker.io
# under `mirrors`, and a peer on 5001 holds every image of the agent's own release.
# Registry mode: a node with `system-default-registry: REG` and no local tarballs
# starts only when REG answers 200 to `GET /v2/<repo>/manifests/<tag>` for every image
# of its release, over HTTPS with `configs.REG.tls.ca_file` and `configs.REG.auth`.
RELEASE_IMAGES_B64 = "@@RKE2_IMAGE_LIST@@"
REGISTRIES = "/etc/rancher/rke2/registries.yaml"
MIRROR_PORT = 5001
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def release_images() -> dict[str, list[str]]:
    """This release's image references by group (core, canal, cilium, ...), carried
    by the program (tests/support/standin/images.py made them at build time)."""
    if not RELEASE_IMAGES_B64.startswith("@@"):
        return json.loads(base64.b64decode(RELEASE_IMAGES_B64))
    t = TAG.replace("+", "-")
    return {"core": [f"docker.io/rancher/rke2-runtime:{t}", "docker.io/rancher/pause:3.6"]}


# upstream: rancher/rke2 scripts/build-images (images-core.txt + images-<cni>.txt) [CONTRACT IM3]
def needed_images(cni: list[str]) -> list[str]:
    """The images a node of this release needs: core plus the images of each CNI."""
    imgs = release_images()
    out = list(imgs.get("core", []))
    for c in cni or [CRITICAL["cni"]]:
        out += imgs.get(c, [])
    return list(dict.fromkeys(out))


def local_image_tarballs() -> list[str]:
    """Non-empty image tarballs in agent/images (what check_images accepts)."""
    found = []
    if os.path.isdir(IMAGES_DIR):
        for f in sorted(os.listdir(IMAGES_DIR)):
            p = os.path.join(IMAGES_DIR, f)
            if f.endswith(IMAGE_SUFFIXES) and os.path.isfile(p) and os.path.getsize(p) > 0:
                found.append(f)
    return found


# upstream: rancher/rke2 scripts/package-images, rancher/rke2-docs docs/install/airgap.md (core+canal in rke2-images) [CONTRACT IM3]
def images_of_tarball(name: str) -> list[str]:
    """The release images an RKE2 image tarball of this node's arch holds, by its name:
    rke2-images.linux-ARCH.* holds core and canal, rke2-images-G.linux-ARCH.* group G."""
    m = re.fullmatch(r"rke2-images(?:-([a-z0-9-]+))?\.linux-([a-z0-9]+)\.tar(\.[a-z0-9]+)?", name)
    if not m or m.group(2) != ARCH:
        return []
    imgs = release_images()
    if m.group(1) is None:
        return imgs.get("core", []) + imgs.get(CRITICAL["cni"], [])
    return list(imgs.get(m.group(1), []))


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def image_cni(cfg: dict[str, object]) -> list[str]:
    return [c for c in cfg_list(cfg, "cni") or [CRITICAL["cni"]] if c != "none"]


def no_tarballs(what: str) -> str:
    return f"no image tarballs in {IMAGES_DIR} (*.tar.zst, *.tar.gz, *.tar) and {what}"


# -- registries.yaml: nested block YAML (the subset PyYAML's safe_dump writes) or JSON --
def _flow(text: str, where: str) -> object:
    """A YAML flow value: {k: v, ...}, [a, b], or a scalar."""
    if text.strip()[:1] not in ("{", "[", "'", '"'):
        return _scalar(text, where)  # a plain scalar (fast: chartContent is long)
    pos = 0

    def ws() -> None:
        nonlocal pos
        while pos < len(text) and text[pos] in " \t":
            pos += 1

    def atom(stop: str) -> str:
        nonlocal pos
        ws()
        start = pos
        if pos < len(text) and text[pos] in "'\"":
            q = text[pos]
            pos += 1
            while pos < len(text):
                if text[pos] == q and q == "'" and text[pos + 1 : pos + 2] == "'":
                    pos += 2  # '' is a quote inside a single-quoted scalar (YAML 1.2 7.3.2)
                    continue
                if text[pos] == q:
                    break
                pos += 2 if text[pos] == "\\" and q == '"' else 1
            pos += 1
            return text[start:pos]
        while pos < len(text) and text[pos] not in stop:
            if text[pos] == ":" and stop == ":,}" and text[pos + 1 : pos + 2] not in (" ", ""):
                pos += 1  # host:port inside a key
                continue
            pos += 1
        return text[start:pos].strip()

    def value(stop: str) -> object:
        nonlocal pos
        ws()
        if pos < len(text) and text[pos] == "{":
            pos += 1
            out: dict[str, object] = {}
            ws()
            if text[pos : pos + 1] == "}":
                pos += 1
                return out
            while True:
                key = str(_scalar(atom(":,}"), where))
                ws()
                if text[pos : pos + 1] != ":":
                    raise Fatal(f"{where}: expected ':' in flow mapping {text!r}")
                pos += 1
                out[key] = value(",}")
                ws()
                c = text[pos : pos + 1]
                pos += 1
                if c == "}":
                    return out
                if c != ",":
                    raise Fatal(f"{where}: bad flow mapping {text!r}")
        if pos < len(text) and text[pos] == "[":
            pos += 1
            items: list[object] = []
            ws()
            if text[pos : pos + 1] == "]":
                pos += 1
                return items
            while True:
                items.append(value(",]"))
                ws()
                c = text[pos : pos + 1]
                pos += 1
                if c == "]":
                    return items
                if c != ",":
                    raise Fatal(f"{where}: bad flow list {text!r}")
        return _scalar(atom(stop), where)

    out = value("")
    ws()
    if pos < len(text):
        raise Fatal(f"{where}: trailing characters in {text!r}")
    return out


def _yaml_key(raw: str, where: str) -> tuple[str, str]:
    """Split ``key: rest`` (keys may be quoted or contain ':' as in host:port)."""
    if raw[0] in "'\"":
        q, i = raw[0], 1
        while i < len(raw) and raw[i] != q:
            i += 2 if raw[i] == "\\" and q == '"' else 1
        key, rest = raw[: i + 1], raw[i + 1 :].lstrip()
        if not rest.startswith(":"):
            raise Fatal(f"{where}: expected ':' after {key}")
        return str(_scalar(key, where)), rest[1:].strip()
    m = re.match(r"^(.+?):(?:\s+(.*))?$", raw)  # the first ':' before a space or the end
    if not m:
        raise Fatal(f"{where}: cannot parse {raw!r}")
    return m.group(1).strip(), (m.group(2) or "").strip()


# upstream: rancher/wharfie pkg/registries (GetPrivateRegistries: YAML); stricter subset [CONTRACT RG3]
def parse_yaml_tree(text: str, name: str = REGISTRIES) -> object:
    """Nested block mappings and lists, flow values, comments; or JSON."""
    if text.lstrip().startswith(("{", "[")):
        with contextlib.suppress(ValueError):
            return json.loads(text)
        flat = " ".join(_strip_comment(x).strip() for x in text.splitlines())
        return _flow(flat.strip(), name)
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if line.strip() and line.strip() not in ("---", "..."):
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise Fatal(f"{name}:{n}: tabs in indentation")
            lines.append((len(line) - len(line.lstrip()), line.strip(), f"{name}:{n}"))
    if not lines:
        return {}

    def block(i: int, indent: int) -> tuple[object, int]:
        if lines[i][1] == "-" or lines[i][1].startswith("- "):
            items: list[object] = []
            while (
                i < len(lines)
                and lines[i][0] == indent
                and (lines[i][1] == "-" or lines[i][1].startswith("- "))
            ):
                rest, where = lines[i][1][1:].strip(), lines[i][2]
                if rest:
                    items.append(_flow(rest, where))
                    i += 1
                elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                    v, i = block(i + 1, lines[i + 1][0])
                    items.append(v)
                else:
                    items.append(None)
                    i += 1
            return items, i
        out: dict[str, object] = {}
        while i < len(lines) and lines[i][0] == indent:
            _, content, where = lines[i]
            if content.startswith("- "):
                raise Fatal(f"{where}: list item where a key was expected")
            key, rest = _yaml_key(content, where)
            i += 1
            if rest:
                out[key] = _flow(rest, where)
            elif i < len(lines) and (
                lines[i][0] > indent or (lines[i][0] == indent and lines[i][1].startswith("- "))
            ):
                out[key], i = block(i, lines[i][0])
            else:
                out[key] = None
        if i < len(lines) and lines[i][0] > indent:
            raise Fatal(f"{lines[i][2]}: unexpected indentation")
        return out, i

    value, i = block(0, lines[0][0])
    if i < len(lines):
        raise Fatal(f"{lines[i][2]}: unexpected indentation")
    return value


def load_registries() -> dict:
    """/etc/rancher/rke2/registries.yaml as a mapping ({} when absent)."""
    if not os.path.exists(REGISTRIES):
        return {}
    with open(REGISTRIES) as f:
        data = parse_yaml_tree(f.read())
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Fatal(f"{REGISTRIES}: not a mapping")
    return data


def split_image(ref: str) -> tuple[str, str, str]:
    """(registry, repository, tag) of ``docker.io/rancher/pause:3.6``."""
    first, _, rest = ref.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", ref
    repo, _, tag = rest.rpartition(":")
    if not repo or "/" in tag:
        repo, tag = rest, "latest"
    if first == "docker.io" and "/" not in repo:
        repo = "library/" + repo
    return first, repo, tag


# -- server side ------------------------------------------------------------------------
# upstream: rancher/rke2-docs docs/install/registry_mirror.md (embedded-registry on servers) [CONTRACT RG1]
def agent_config_answer(server: Server, b: dict) -> tuple:
    """``POST /v1-mk8s/agent-config`` (token checked): what an agent without local
    images needs to know before it joins."""
    server.check_token(b.get("token", ""), "server" if b.get("role") == "server" else "agent")
    mirrors = [
        e["address"]
        for n, e in sorted(server.state.members().items())
        if e.get("embedded_registry")
    ]
    return 200, {
        "embedded_registry": bool(mirrors),
        "mirrors": mirrors,
        "cni": server.state.cluster.get("settings", {}).get("cni", CRITICAL["cni"]),
        "system_default_registry": cfg_str(server.cfg, "system-default-registry"),
        # what the running servers run (a node rolled back asks: VS6)
        "server_versions": sorted(set(running_servers(server.state, "").values())),
    }


class MirrorState:
    """What this server's embedded mirror answers on 5001."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.sums: dict[tuple[str, int, int], str] = {}

    def answer(self) -> dict:
        tarballs: dict[str, str] = {}
        images: list[str] = []
        with self.lock:
            for f in local_image_tarballs():
                p = os.path.join(IMAGES_DIR, f)
                st = os.stat(p)
                k = (f, st.st_size, st.st_mtime_ns)
                if k not in self.sums:
                    self.sums[k] = _file_sha256(p)
                tarballs[f] = self.sums[k]
                images += images_of_tarball(f)
        return {
            "node": self.name,
            "tag": TAG,
            "arch": ARCH,
            "images": list(dict.fromkeys(images)),
            "tarballs": tarballs,
        }


# upstream: k3s-io/k3s pkg/spegel/spegel.go, rancher/rke2-docs docs/install/registry_mirror.md (port 5001) [CONTRACT RG1]
def serve_mirror(server: Server, ctx: ssl.SSLContext) -> None:
    """Record this server's ``embedded-registry`` setting in its node entry (in etcd)
    and, when on, answer on TCP 5001 with the images it holds."""
    on = server.cfg.get("embedded-registry") in (True, "true")
    with server.state.lock:
        e = server.state.node(server.name)
        if e is not None and bool(e.get("embedded_registry")) != on:
            server.state.put(server.name, {**e, "embedded_registry": on})
    if not on:
        return
    mirror = MirrorState(server.name)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/v1-mk8s/images":
                code, data = 200, json.dumps(mirror.answer()).encode()
            else:
                code, data = 404, b'{"message": "not found"}'
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    try:
        httpd = TLSServer(("0.0.0.0", MIRROR_PORT), Handler, ctx)
    except OSError as e:
        raise Fatal(
            f"embedded registry: listen tcp 0.0.0.0:{MIRROR_PORT}: bind: {e.strerror}"
        ) from None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    log(f"Embedded registry mirror (spegel) listening on :{MIRROR_PORT}")


# -- node side --------------------------------------------------------------------------
def fetch_agent_config(url: str, token: str) -> tuple[dict, ssl.SSLContext]:
    """The cluster's image settings from a server, asked until it answers (an agent
    never gives up: agent_retry)."""

    def once() -> tuple[dict, ssl.SSLContext]:
        host, port = parse_server_url(url)
        ctx = join_ctx(url, token)
        out = call(host, port, "POST", "/v1-mk8s/agent-config", {"token": token}, ctx=ctx)
        assert isinstance(out, dict)
        return out, ctx

    return agent_retry(once)


# upstream: rancher/rke2-docs docs/install/registry_mirror.md (mirrors entry needed); stricter: docker.io only [CONTRACT RG1]
def check_peer_images(ac: dict, ctx: ssl.SSLContext, needed: list[str]) -> None:
    """Servers mode: embedded mirror on, docker.io mirrored, a peer holding ``needed``."""
    want = f"cannot pull {needed[0]} (air gap)"
    if not ac.get("embedded_registry"):
        raise Fatal(
            no_tarballs(
                "the embedded registry mirror is off in this cluster (no server runs with "
                f"embedded-registry: true): {want}"
            )
        )
    mirrors = load_registries().get("mirrors")
    if not isinstance(mirrors, dict) or "docker.io" not in mirrors:
        raise Fatal(
            no_tarballs(
                f"{REGISTRIES} does not list docker.io under mirrors: the embedded registry "
                f"mirror shares only images of mirrored registries; {want}"
            )
        )
    why = []
    for addr in ac.get("mirrors", []):
        try:
            held = call(addr, MIRROR_PORT, "GET", "/v1-mk8s/images", timeout=5, ctx=ctx)
        except (OSError, HTTPFail, ValueError) as e:
            why.append(f"{addr}:{MIRROR_PORT}: {e}")
            continue
        have = set(held.get("images", [])) if isinstance(held, dict) else set()
        missing = [i for i in needed if i not in have]
        if not missing:
            log(
                f"Images of rke2 {TAG} ({len(needed)}) available from the embedded registry "
                f"mirror at {addr}:{MIRROR_PORT}"
            )
            return
        why.append(f"{addr}:{MIRROR_PORT}: missing {', '.join(missing)}")
    raise Fatal(
        no_tarballs(
            f"no peer of the embedded registry mirror on port {MIRROR_PORT} holds the images "
            f"of rke2 {TAG} ({'; '.join(why) or 'no peers'}); {want}"
        )
    )


# upstream: rancher/rke2-docs docs/install/private_registry.md, rancher/rke2 pkg/images/images.go; stricter [CONTRACT RG2]
def check_registry_images(cfg: dict[str, object], needed: list[str]) -> None:
    """Registry mode: system-default-registry serves every image of this release."""
    reg = cfg_str(cfg, "system-default-registry").strip().rstrip("/")
    reg = reg.removeprefix("https://")
    configs = load_registries().get("configs") or {}
    conf = configs.get(reg) or configs.get("https://" + reg) or {}
    if not isinstance(conf, dict):
        conf = {}
    auth = conf.get("auth") or {}
    tls = conf.get("tls") or {}
    ca_file = str(tls.get("ca_file") or "") if isinstance(tls, dict) else ""
    try:
        if isinstance(tls, dict) and tls.get("insecure_skip_verify") in (True, "true"):
            ctx = insecure_ctx()
        elif ca_file:
            ctx = ssl.create_default_context(cafile=ca_file)
        else:
            ctx = ssl.create_default_context()
    except (OSError, ssl.SSLError) as e:
        raise Fatal(
            no_tarballs(f"system-default-registry {reg}: cannot load ca_file {ca_file}: {e}")
        ) from None
    headers = {
        "Accept": MANIFEST_ACCEPT,
        "User-Agent": f"containerd/1.7 rke2/{TAG} (mk8s stand-in)",
    }
    user = str(auth.get("username") or "") if isinstance(auth, dict) else ""
    if user:
        pw = str(auth.get("password") or "")  # type: ignore[union-attr]
        headers["Authorization"] = "Basic " + b64(f"{user}:{pw}")
    u = urllib.parse.urlsplit("https://" + reg)
    for ref in needed:
        _, repo, tag = split_image(ref)
        where = f"{reg}/{repo}:{tag}"
        try:
            conn = http.client.HTTPSConnection(
                u.hostname or reg, u.port or 443, timeout=5, context=ctx
            )
            try:
                conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            finally:
                conn.close()
        except ssl.SSLCertVerificationError as e:
            reason = (
                f"tls: failed to verify certificate: {e.verify_message} "
                f"(ca_file {ca_file or 'none: system roots'})"
            )
        except (OSError, http.client.HTTPException) as e:
            reason = f"cannot reach the registry: {e}"
        else:
            if resp.status == 200:
                continue
            try:
                errs = json.loads(body).get("errors") or [{}]
                detail = str(errs[0].get("message") or errs[0].get("code") or "")
            except (ValueError, AttributeError):
                detail = ""
            reason = f"{resp.status} {resp.reason}{': ' + detail if detail else ''}"
            if resp.status == 401:
                reason += (
                    f" (username {user!r}; check configs.{reg}.auth in {REGISTRIES})"
                    if user
                    else f" (no credentials under configs.{reg}.auth in {REGISTRIES})"
                )
        raise Fatal(
            no_tarballs(
                f"system-default-registry {reg} does not serve {ref} as {where}: {reason}; "
                "cannot pull the release's images"
            )
        )
    log(f"Images of rke2 {TAG} ({len(needed)}) served by system-default-registry {reg}")


# upstream: rancher/rke2 pkg/bootstrap/bootstrap.go (Stage: tarball, else registry pull) [CONTRACT IM1 RG1 RG2]
def check_node_images(cfg: dict[str, object], role: str) -> None:
    """Local tarballs (check_images), else system-default-registry, else (agents) the
    embedded registry mirror; a server without either refuses as check_images does."""
    if local_image_tarballs() or (role == "server" and not cfg_str(cfg, "system-default-registry")):
        check_images()
        return
    cni = image_cni(cfg)
    ac: dict = {}
    ctx = None
    if role == "agent":
        url = cfg_str(cfg, "server")
        token = agent_token(cfg)
        if not url or not token:
            return  # run_agent refuses: --server / --token is required
        ac, ctx = fetch_agent_config(url, token)
        cni = [c for c in str(ac.get("cni") or CRITICAL["cni"]).split(",") if c and c != "none"]
    needed = needed_images(cni)
    registry = cfg_str(cfg, "system-default-registry")
    if role == "agent":
        registry = agent_registry(cfg, ac)
    if registry:
        check_registry_images({**cfg, "system-default-registry": registry}, needed)
    else:
        assert ctx is not None
        check_mirror_release()
        check_peer_images(ac, ctx, needed)


# upstream: rancher/rke2#9197; rancher/rke2-docs docs/install/registry_mirror.md (Version Gate) [CONTRACT RG5]
def check_mirror_release() -> None:
    """An agent pulls from the embedded registry mirror only on a release that has it
    (rancher/rke2-docs docs/install/registry_mirror.md) and whose agents can bootstrap
    from it: not v1.31.13 or v1.31.14 (rancher/rke2#9197; gates.py)."""
    gates = standin_module("gates")
    if not gates.has("embedded-mirror", TAG):
        raise Fatal(no_tarballs(f"rke2 {TAG} has no embedded registry mirror to pull from"))
    if not gates.has("embedded-mirror-agents", TAG):
        raise Fatal(
            no_tarballs(
                f"failed to pull images from the embedded registry mirror: rke2 {TAG} agents"
                " cannot bootstrap from it (rancher/rke2#9197)"
            )
        )


# ---- image import (containerd's, at node start) ---------------------------------------
IMPORTED_IMAGES = DATA_DIR + "/agent/mk8s-standin-images.json"
OCI_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
OCI_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_KEEP_BYTES = 4 << 20  # documents (index, manifests, configs) are never bigger
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class ImageImportError(Exception):
    pass


# upstream: k3s-io/k3s pkg/agent/containerd/containerd.go (preloadFile by suffix); stricter: fewer suffixes [CONTRACT IP1]
def _decompressor(path: str) -> tuple[list[str] | None, str]:
    """(command that decompresses to stdout, or None for the stdlib) by file suffix,
    as RKE2 chooses its reader."""
    if path.endswith(".tar.zst"):
        return ["zstd", "-dcq", "--", path], ""
    if path.endswith(".tar.lz4"):
        return ["lz4", "-dcq", "--", path], ""
    if path.endswith(".tar.gz"):
        return None, "gz"
    if path.endswith(".tar.bz2"):
        return None, "bz2"
    return None, ""


def _scan_members(path: str) -> dict[str, dict]:
    """Every regular member of the image tarball: sha256, size, uncompressed sha256 of a
    gzip member, the bytes of small members; links as {"link": target}."""
    cmd, mode = _decompressor(path)
    proc = None
    if cmd is not None:
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        except OSError as e:
            raise ImageImportError(f"cannot run {cmd[0]}: {e}") from None
    try:
        if proc is not None:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
                members = _read_tar(tf)
            while proc.stdout.read(1 << 20):
                pass  # the rest of the stream
        else:
            with tarfile.open(path, mode=f"r|{mode}" if mode else "r|") as tf:
                members = _read_tar(tf)
    except tarfile.TarError as e:
        raise ImageImportError(f"not a tar archive: {e}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise ImageImportError(f"cannot read the archive: {e}") from None
    finally:
        err = ""
        if proc is not None:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace").strip()
            proc.stderr.close()
    if proc is not None and proc.wait() != 0 and cmd is not None:
        raise ImageImportError(f"{cmd[0]} -d failed: {err}")
    return members


def _read_tar(tf: tarfile.TarFile) -> dict[str, dict]:
    members: dict[str, dict] = {}
    for ti in tf:
        name = posixpath.normpath(ti.name.lstrip("/")).removeprefix("./")
        if ti.issym():
            target = posixpath.join(posixpath.dirname(name), ti.linkname)
            members[name] = {"link": posixpath.normpath(target)}
            continue
        if ti.islnk():
            members[name] = {"link": posixpath.normpath(ti.linkname.lstrip("/"))}
            continue
        if not ti.isfile():
            continue
        f = tf.extractfile(ti)
        assert f is not None
        h, gz_h = hashlib.sha256(), hashlib.sha256()
        keep = ti.size <= _KEEP_BYTES
        kept = bytearray()
        gz = None
        first = True
        while chunk := f.read(1 << 20):
            if first and chunk[:2] == b"\x1f\x8b":
                gz = zlib.decompressobj(31)
            first = False
            h.update(chunk)
            if keep:
                kept += chunk
            if gz is not None:
                try:
                    gz_h.update(gz.decompress(chunk))
                except zlib.error:
                    gz = None
        entry: dict = {"digest": "sha256:" + h.hexdigest(), "size": ti.size}
        if keep:
            entry["data"] = bytes(kept)
        if gz is not None and gz.eof:
            entry["diff"] = "sha256:" + gz_h.hexdigest()
        members[name] = entry
    return members


class _Archive:
    def __init__(self, path: str, members: dict[str, dict]) -> None:
        self.path = path
        self.members = members

    def get(self, name: str) -> dict | None:
        name = posixpath.normpath(name.lstrip("/")).removeprefix("./")
        for _ in range(16):
            m = self.members.get(name)
            if m is None or "link" not in m:
                return m
            name = m["link"]
        return None

    def json(self, name: str, what: str) -> object:
        m = self.get(name)
        if m is None:
            raise ImageImportError(f"missing {what} {name}")
        if "data" not in m:
            raise ImageImportError(f"{what} {name} is over {_KEEP_BYTES} bytes")
        try:
            return json.loads(m["data"])
        except ValueError as e:
            raise ImageImportError(f"{what} {name} is not valid JSON: {e}") from None


# upstream: containerd/containerd reference/docker (ParseNormalizedNamed) [CONTRACT IP3]
def normalize_ref(ref: str) -> str:
    """containerd's (docker's) normal form: ``rancher/pause:3.6`` ->
    ``docker.io/rancher/pause:3.6``, ``busybox`` -> ``docker.io/library/busybox:latest``."""
    name, at, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", name
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = rest.rsplit(":", 1)
    else:
        repo, tag = rest, "" if at else "latest"
    if first == "docker.io" and "/" not in repo:
        repo = "library/" + repo
    if not re.fullmatch(r"[a-z0-9]+(?:[._-]+[a-z0-9]+|/[a-z0-9]+)*(?:[._/-]+[a-z0-9]+)*", repo):
        raise ImageImportError(f"invalid image reference {ref!r}")
    if tag and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise ImageImportError(f"invalid tag in image reference {ref!r}")
    if at and not _DIGEST.fullmatch(digest):
        raise ImageImportError(f"invalid digest in image reference {ref!r}")
    return f"{first}/{repo}" + (f":{tag}" if tag else "") + (f"@{digest}" if at else "")


def _mismatch(what: str, expected: str, got: str) -> ImageImportError:
    return ImageImportError(f"{what}: digest mismatch: expected {expected} got {got}")


# upstream: containerd/containerd images/archive/importer.go (blobs written with expected digest) [CONTRACT IP2]
def _check_blob(arc: _Archive, desc: object, what: str) -> dict:
    """The blob a descriptor names, its digest and size checked."""
    if not isinstance(desc, dict):
        raise ImageImportError(f"{what}: not a descriptor")
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ImageImportError(f"{what}: bad digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageImportError(f"{what} {digest}: bad size {size!r}")
    name = "blobs/sha256/" + digest[7:]
    m = arc.get(name)
    if m is None:
        raise ImageImportError(f"{what} {digest}: missing blob {name}")
    if m["digest"] != digest:
        raise _mismatch(f"{what} {name}", digest, m["digest"])
    if m["size"] != size:
        raise ImageImportError(
            f"{what} {digest}: size mismatch: expected {size} bytes got {m['size']}"
        )
    return m


# upstream: k3s-io/k3s pkg/agent/containerd/containerd.go (preloadFile: WithSkipMissing, k3s-io/k3s#10136) [CONTRACT IP5]
def _platform_not_carried(arc: _Archive, kid: object) -> bool:
    """An index entry whose manifest the archive lacks (a platform not carried). RKE2
    imports with WithAllPlatforms(true), and from v1.27.15/v1.28.11/v1.29.6/v1.30.2 with
    WithSkipMissing(), which skips it (k3s-io/k3s pkg/agent/containerd/containerd.go
    preloadFile; gates.py); before, the whole file fails as containerd's import does."""
    digest = kid.get("digest") if isinstance(kid, dict) else None
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return False
    if arc.get("blobs/sha256/" + digest[7:]) is not None:
        return False
    if standin_module("gates").has("import-partial-index", TAG):
        return True
    raise ImageImportError(f"content digest {digest}: not found")


def _walk_oci(arc: _Archive, desc: dict, what: str, depth: int = 0) -> None:
    """Check a manifest or index and everything below it (containerd writes each blob
    into its content store with the expected digest)."""
    if depth > 8:
        raise ImageImportError(f"{what}: indexes nested too deeply")
    _check_blob(arc, desc, what)
    name = "blobs/sha256/" + str(desc["digest"])[7:]
    doc = arc.json(name, what)
    if not isinstance(doc, dict):
        raise ImageImportError(f"{what} {desc['digest']}: not a JSON object")
    media = (
        desc.get("mediaType")
        or doc.get("mediaType")
        or (OCI_INDEX_TYPES[0] if "manifests" in doc else OCI_MANIFEST_TYPES[0])
    )
    if media in OCI_INDEX_TYPES:
        kids = doc.get("manifests")
        if not isinstance(kids, list):
            raise ImageImportError(f"{what} {desc['digest']}: an index without manifests")
        for kid in kids:
            if isinstance(kid, dict) and kid.get("mediaType") not in (
                *OCI_INDEX_TYPES,
                *OCI_MANIFEST_TYPES,
                None,
            ):
                continue  # an attestation or signature: not an image
            if _platform_not_carried(arc, kid):
                continue
            _walk_oci(arc, kid, "manifest", depth + 1)
        return
    if media not in OCI_MANIFEST_TYPES:
        raise ImageImportError(f"{what} {desc['digest']}: unsupported media type {media}")
    cfg_desc = doc.get("config")
    _check_blob(arc, cfg_desc, "config")
    assert isinstance(cfg_desc, dict)
    config = arc.json("blobs/sha256/" + cfg_desc["digest"][7:], "config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ImageImportError(f"{what} {desc['digest']}: a manifest without layers")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise ImageImportError(
            f"config {cfg_desc['digest']}: rootfs.diff_ids does not list the manifest's "
            f"{len(layers)} layers"
        )
    for i, layer in enumerate(layers):
        m = _check_blob(arc, layer, "layer")
        lt = str(layer.get("mediaType", ""))
        got = m["digest"] if lt.endswith(".tar") or lt.endswith(".tar.layer") else m.get("diff")
        if lt.endswith("+gzip") or lt.endswith(".tar.gzip"):
            got = m.get("diff")
            if got is None:
                raise ImageImportError(f"layer {layer['digest']}: not gzip data")
        if got is not None and got != diff_ids[i]:
            raise _mismatch(f"layer {layer['digest']} (uncompressed, diff_id)", diff_ids[i], got)


# upstream: containerd/containerd images/archive/importer.go (ImportIndex: oci-layout 1.0.0) [CONTRACT IP2 IP3]
def _import_oci(arc: _Archive) -> list[dict]:
    layout = arc.json("oci-layout", "file")
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
        raise ImageImportError("oci-layout: unsupported image layout version")
    index = arc.json("index.json", "file")
    kids = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(kids, list):
        raise ImageImportError("index.json: no manifests list")
    images = []
    seen: set[str] = set()
    for n, desc in enumerate(kids, 1):
        ann = (desc.get("annotations") or {}) if isinstance(desc, dict) else {}
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        label = f"image {name}" if name else f"index.json entry {n}"
        try:
            _walk_oci(arc, desc, "manifest")
            if name and "/" in name:
                name = normalize_ref(name)
        except ImageImportError as e:
            raise ImageImportError(f"{label}: {e}") from None
        images.append({"name": name or "", "digest": desc["digest"], "format": "oci"})
        seen.add(desc["digest"])
    # containerd writes every blob of the layout, referenced or not, under its digest.
    for name, m in sorted(arc.members.items()):
        if name.startswith("blobs/sha256/") and "link" not in m:
            want = "sha256:" + name.rsplit("/", 1)[1]
            if m["digest"] != want:
                raise _mismatch(f"blob {name}", want, m["digest"])
    return images


def _import_docker(arc: _Archive) -> list[dict]:
    entries = arc.json("manifest.json", "file")
    if not isinstance(entries, list):
        raise ImageImportError("manifest.json is not a list of images")
    images = []
    for n, e in enumerate(entries, 1):
        if not isinstance(e, dict):
            raise ImageImportError(f"manifest.json entry {n} is not an object")
        tags = e.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImageImportError(f"manifest.json entry {n}: bad RepoTags")
        label = f"image {', '.join(tags)}" if tags else f"manifest.json entry {n}"
        try:
            names = [normalize_ref(t) for t in tags]
            cfg_name = e.get("Config")
            if not isinstance(cfg_name, str):
                raise ImageImportError("no Config")
            m = arc.get(cfg_name)
            if m is None:
                raise ImageImportError(f"config {cfg_name}: missing")
            hexname = re.search(r"(?:^|/)([0-9a-f]{64})(?:\.json)?$", cfg_name)
            if not hexname:
                raise ImageImportError(f"config {cfg_name}: its name is not its sha256")
            if m["digest"] != "sha256:" + hexname.group(1):
                raise _mismatch(f"config {cfg_name}", "sha256:" + hexname.group(1), m["digest"])
            config = arc.json(cfg_name, "config")
            layers = e.get("Layers")
            diff_ids = (
                (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
            )
            if not isinstance(layers, list) or not isinstance(diff_ids, list):
                raise ImageImportError(f"config {cfg_name}: no Layers or rootfs.diff_ids")
            if len(layers) != len(diff_ids):
                raise ImageImportError(
                    f"{len(layers)} layers but config {cfg_name} lists {len(diff_ids)} diff_ids"
                )
            for path, want in zip(layers, diff_ids, strict=True):
                lm = arc.get(str(path))
                if lm is None:
                    raise ImageImportError(f"layer {path}: missing")
                got = lm.get("diff") or lm["digest"]
                if got != want:
                    raise _mismatch(f"layer {path}", str(want), got)
        except ImageImportError as err:
            raise ImageImportError(f"{label}: {err}") from None
        digest = m["digest"]
        images += [{"name": t, "digest": digest, "format": "docker"} for t in names]
        if not names:
            images.append({"name": "", "digest": digest, "format": "docker"})
    return images


# upstream: containerd/containerd images/archive/importer.go (OCI layout or docker save) [CONTRACT IP3]
def import_archive(path: str) -> list[dict]:
    """The images one tarball in agent/images holds, every blob checked; raises
    ImageImportError (containerd fails the whole file's import)."""
    arc = _Archive(path, _scan_members(path))
    if arc.get("oci-layout") is not None and arc.get("index.json") is not None:
        return _import_oci(arc)
    if arc.get("manifest.json") is not None:
        return _import_docker(arc)
    raise ImageImportError(
        "neither an OCI image layout (oci-layout, index.json) nor a docker archive (manifest.json)"
    )


# upstream: k3s-io/k3s pkg/agent/containerd/containerd.go (preloadImages: error logged, next file) [CONTRACT IP2 IP4]
def import_images() -> dict:
    """Import each tarball in agent/images as containerd does at start: a file whose
    import fails is logged (level=error) and its images are left out; the node starts.
    Results are cached per (name, size, mtime, inode), like image_hashes."""
    try:
        with open(IMPORTED_IMAGES) as f:
            old = json.load(f).get("files", {})
    except (OSError, ValueError, AttributeError):
        old = {}
    files: dict[str, dict] = {}
    images: list[dict] = []
    for name in local_image_tarballs():
        p = os.path.join(IMAGES_DIR, name)
        st = os.stat(p)
        key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        rec = old.get(name) if isinstance(old, dict) else None
        if not isinstance(rec, dict) or rec.get("key") != key:
            try:
                rec = {"key": key, "images": import_archive(p)}
            except ImageImportError as e:
                rec = {"key": key, "images": [], "error": str(e)}
        files[name] = rec
        if rec.get("error"):
            log(f"Failed to import {p}: {rec['error']}", "error")
            continue
        got = rec.get("images", [])
        log(f"Imported images from {p}: {', '.join(i['name'] or i['digest'] for i in got)}")
        images += [dict(i, file=name) for i in got]
    out = {"files": files, "images": images}
    write_file(IMPORTED_IMAGES, json.dumps(out, indent=1, sort_keys=True), 0o644)
    return out


# upstream: k3s-io/k3s pkg/agent/containerd/watcher.go; rancher/rke2-docs docs/add-ons/import-images.md [CONTRACT IP4]
def watch_images() -> None:
    """From v1.29.13/v1.30.9/v1.31.5 a tarball placed in agent/images while RKE2 runs
    is imported (gates.py), as k3s's watcher decides (k3s-io/k3s
    pkg/agent/containerd/watcher.go): the files present at start are known (Populate);
    a file is imported when it is new, or when its size changed and its mtime is newer
    (processImageEvent), never for a same-size replacement; a removed file is forgotten,
    its images stay imported. An older release imports them when it starts, only."""
    if not standin_module("gates").has("import-while-running", TAG):
        return

    def loop() -> None:
        known = _image_files()
        while True:
            time.sleep(WATCH_SECONDS)
            with contextlib.suppress(OSError):
                now = _image_files()
                for n, (size, mtime) in sorted(now.items()):
                    last = known.get(n)
                    if last is None or (size != last[0] and mtime > last[1]):
                        import_while_running(n)
                known = now

    threading.Thread(target=loop, daemon=True).start()


def show_images() -> int:
    """``rke2 mk8s-images``: what this node imported (the state file), as JSON."""
    with contextlib.suppress(Fatal, OSError):
        use_config_paths(load_config())
    try:
        with open(IMPORTED_IMAGES) as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {"files": {}, "images": []}
    except (OSError, ValueError) as e:
        print(f"rke2: cannot read {IMPORTED_IMAGES}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=1, sort_keys=True))
    return 0


# ---- manifests (RKE2's deploy controller and helm-controller) -------------------------
MANIFESTS_DIR = SERVER_DIR + "/manifests"
# file -> the size:mtime:inode key this server process last applied (the deploy
# controller's modTime map: empty at start, so every file is applied again).
APPLIED_FILES: dict[str, str] = {}
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(Exception):
    pass


def _documents(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each YAML document (``---`` separated)."""
    docs: list[tuple[int, str]] = []
    cur: list[str] = []
    first = 1
    for n, line in enumerate(text.splitlines(), 1):
        if re.fullmatch(r"---(\s+#.*)?\s*", line) or re.fullmatch(r"\.\.\.\s*", line):
            docs.append((first, "\n".join(cur)))
            cur, first = [], n + 1
            continue
        if line.startswith("--- "):
            raise ManifestError(f"line {n}: content after the document marker is not supported")
        cur.append(line)
    docs.append((first, "\n".join(cur)))
    return [(n, d) for n, d in docs if any(_strip_comment(x).strip() for x in d.splitlines())]


# upstream: k3s-io/k3s pkg/deploy/controller.go (yamlToObjects, toObjects: List unpacked) [CONTRACT MF2]
def parse_manifest(name: str, data: bytes) -> list[dict]:
    """The objects of one manifest file; ManifestError when it does not parse or an
    object lacks apiVersion, kind or metadata.name."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8: {e}") from None
    objs: list[object] = []
    if text.lstrip().startswith(("{", "[")):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ManifestError(f"invalid JSON: {e}") from None
        objs = list(doc) if isinstance(doc, list) else [doc]
    else:
        for n, chunk in _documents(text):
            try:
                # line numbers of the whole file in messages
                objs.append(parse_yaml_tree("\n" * (n - 1) + chunk, name))
            except Fatal as e:
                raise ManifestError(f"yaml: {e}") from None
    out: list[dict] = []
    for i, obj in enumerate(objs, 1):
        if isinstance(obj, dict) and obj.get("kind") == "List" and "items" in obj:
            items = obj.get("items")
            if not isinstance(items, list):
                raise ManifestError(f"document {i}: a List whose items is not a list")
            for it in items:
                out.append(_check_object(it, f"document {i} (List item)"))
            continue
        out.append(_check_object(obj, f"document {i}"))
    return out


# upstream: kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/runtime/serializer/json (Object 'Kind' is missing) [CONTRACT MF2]
def _check_object(obj: object, where: str) -> dict:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: not a mapping (Object 'Kind' is missing)")
    for key in ("apiVersion", "kind"):
        v = obj.get(key)
        if not isinstance(v, str) or not v:
            raise ManifestError(f"{where}: Object '{key[0].upper() + key[1:]}' is missing")
    md = obj.get("metadata")
    name = md.get("name") if isinstance(md, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where} ({obj['kind']}): metadata.name is required")
    return obj


# upstream: k3s-io/helm-controller pkg/controllers/chart/chart.go, pkg/apis/helm.cattle.io/v1/types.go (chartContent) [CONTRACT MF3]
def install_chart(obj: dict) -> dict:
    """helm-controller's install of a HelmChart with chartContent: the base64 of a gzip
    tar with ``NAME/Chart.yaml``; returns the chart's name and version."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError("HelmChart without spec")
    content = spec.get("chartContent")
    if not content:
        if spec.get("chart"):
            raise ManifestError(
                f"HelmChart spec.chart {spec.get('chart')!r} without chartContent: no chart "
                "repository is reachable in an air gap"
            )
        raise ManifestError("HelmChart has neither spec.chart nor spec.chartContent")
    if not isinstance(content, str):
        raise ManifestError("spec.chartContent is not a string")
    try:
        tgz = base64.b64decode(content, validate=True)
    except ValueError as e:
        raise ManifestError(f"spec.chartContent is not base64: {e}") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
            charts = [
                m
                for m in tf.getmembers()
                if m.isfile() and re.fullmatch(r"[^/]+/Chart\.yaml", m.name)
            ]
            if len(charts) != 1:
                raise ManifestError("the chart archive has no NAME/Chart.yaml")
            f = tf.extractfile(charts[0])
            assert f is not None
            meta = parse_yaml_tree(f.read().decode("utf-8"), charts[0].name)
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise ManifestError(f"spec.chartContent is not a chart archive (gzip tar): {e}") from None
    except Fatal as e:
        raise ManifestError(f"Chart.yaml: {e}") from None
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("version"):
        raise ManifestError(f"{charts[0].name}: name and version are required")
    return {"chart": str(meta["name"]), "version": str(meta["version"])}


# upstream: k3s-io/helm-controller pkg/controllers/chart/chart.go (contentConfigMap; #267) [CONTRACT HC4]
def helm_sync(o: dict, spec: dict) -> dict:
    """What helm-controller makes of one HelmChart: its content's hash, and "failed"
    when its chartContent cannot be stored (tests/support/standin/helmcontroller.py)."""
    content = str(spec.get("chartContent") or "")
    out: dict = {"content": hashlib.sha256(content.encode()).hexdigest()[:16]}
    err = standin_module("helmcontroller").content_error(o["namespace"], o["name"], content)
    if err:
        out.update(status="failed", error=err)
    return out


# upstream: k3s-io/k3s pkg/deploy/controller.go (deploy: the file fails as a whole) [CONTRACT MF4]
def process_manifest(path: str) -> dict:
    """What RKE2 does with one file in server/manifests: apply each object, install each
    HelmChart; the whole file fails when any part does (nothing of it is applied)."""
    with open(path, "rb") as f:
        data = f.read()
    rec: dict = {"sha256": hashlib.sha256(data).hexdigest(), "objects": []}
    try:
        objs = parse_manifest(os.path.basename(path), data)
        for obj in objs:
            md = obj["metadata"]
            o = {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": md["name"],
                "namespace": str(md.get("namespace") or "default"),
                "status": "applied",
            }
            if obj["apiVersion"] == "helm.cattle.io/v1" and obj["kind"] == "HelmChart":
                o.update(install_chart(obj), status="installed")
                spec = obj["spec"]
                o["targetNamespace"] = str(spec.get("targetNamespace") or o["namespace"])
                o.update(helm_sync(o, spec))
            rec["objects"].append(o)
        rec["status"] = "applied"
    except ManifestError as e:
        rec.update(status="failed", error=str(e), objects=[])
    return rec


# upstream: k3s-io/k3s pkg/deploy/controller.go (listFilesIn, shouldSkipFile; walks subdirs) [CONTRACT MF1]
def manifest_files() -> list[str]:
    if not os.path.isdir(MANIFESTS_DIR):
        return []
    names = set(os.listdir(MANIFESTS_DIR))
    return sorted(
        n
        for n in names
        if n.endswith(MANIFEST_SUFFIXES)
        and not n.startswith(".")
        and n + ".skip" not in names
        and os.path.isfile(os.path.join(MANIFESTS_DIR, n))
    )


# ---- kubectl ---------------------------------------------------------------------------
def age(ts: float) -> str:
    s = max(0, int(time.time() - ts))
    if s < 120:
        return f"{s}s"
    if s < 3600 * 2:
        return f"{s // 60}m"
    if s < 86400 * 2:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _kc_field(kc: str, key: str) -> str:
    m = re.search(rf"^\s*{re.escape(key)}:\s*(\S+)", kc, re.M)
    return m.group(1).strip("'\"") if m else ""


def kubeconfig_ctx(kc: str) -> ssl.SSLContext:
    """TLS from the kubeconfig: the cluster CA (data or file), the client certificate
    and key (data or files); ``insecure-skip-tls-verify: true`` as kubectl does."""

    def material(key: str) -> str:
        data = _kc_field(kc, key + "-data")
        if data:
            return base64.b64decode(data).decode()
        path = _kc_field(kc, key)
        if path:
            with open(path) as f:
                return f.read()
        return ""

    if _kc_field(kc, "insecure-skip-tls-verify") == "true":
        ctx = insecure_ctx()
    else:
        ca = material("certificate-authority")
        ctx = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
    cert, key = material("client-certificate"), material("client-key")
    if cert and key:
        with tempfile.TemporaryDirectory(prefix="kubectl-") as d:
            for name, data in (("c", cert), ("k", key)):
                with open(
                    os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o600), "w"
                ) as f:
                    f.write(data)
            ctx.load_cert_chain(os.path.join(d, "c"), os.path.join(d, "k"))
    return ctx


# kubectl flags the stand-in knows, per verb (a flag another verb has is refused, as
# kubectl does: "error: unknown flag: --x").
# upstream: kubernetes/kubernetes staging/src/k8s.io/kubectl/pkg/cmd/drain/drain.go (drain flags) [CONTRACT KC1]
KUBECTL_VALUE_FLAGS = {"--kubeconfig", "-s", "--server", "--request-timeout", "-n",
                       "--namespace", "-o", "--output", "--raw", "--timeout", "--grace-period",
                       "--skip-wait-for-delete-timeout"}  # fmt: skip
KUBECTL_BOOL_FLAGS = {"--ignore-not-found", "--ignore-daemonsets", "--delete-emptydir-data",
                      "--force", "--disable-eviction", "-A", "--all-namespaces"}  # fmt: skip
KUBECTL_COMMON = {"--kubeconfig", "-s", "--server", "--request-timeout", "-n", "--namespace"}
KUBECTL_VERB_FLAGS = {
    "get": {"-o", "--output", "--raw", "--ignore-not-found", "-A", "--all-namespaces"},
    "delete": {"--ignore-not-found", "--timeout", "--grace-period", "--force"},
    "cordon": set(),
    "uncordon": set(),
    "drain": {"--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout",
              "--grace-period", "--disable-eviction", "--skip-wait-for-delete-timeout"},
    "version": set(),
}  # fmt: skip
_GO_DURATION = re.compile(r"0|([0-9]+(\.[0-9]*)?(ns|us|\u00b5s|ms|s|m|h))+")


# upstream: spf13/pflag flag.go (unknown flag, flag needs an argument), golang/go src/time/format.go [CONTRACT KC1]
def parse_kubectl_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(positional arguments, flags) like kubectl's flag parsing; raises ValueError
    with kubectl's message for an unknown flag, a missing value or a bad one."""
    pos: list[str] = []
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if not a.startswith("-") or a == "-":
            pos.append(a)
            continue
        flag, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
        if flag in KUBECTL_BOOL_FLAGS:
            if eq and val not in ("true", "false"):
                raise ValueError(
                    f'invalid argument "{val}" for "{flag}" flag: strconv.ParseBool: '
                    f'parsing "{val}": invalid syntax'
                )
            flags[flag] = val or "true"
        elif flag in KUBECTL_VALUE_FLAGS:
            if not eq:
                if i >= len(argv):
                    raise ValueError(f"flag needs an argument: {flag}")
                val, i = argv[i], i + 1
            flags[flag] = val
        else:
            raise ValueError(f"unknown flag: {flag}")
    verb = pos[0] if pos else ""
    allowed = KUBECTL_COMMON | KUBECTL_VERB_FLAGS.get(verb, set())
    for flag in flags:
        if flag not in allowed and verb in KUBECTL_VERB_FLAGS:
            raise ValueError(f"unknown flag: {flag}")
    v = flags.get("--timeout")
    if v is not None and not _GO_DURATION.fullmatch(v):
        why = "missing unit in duration" if re.fullmatch(r"[0-9.]+", v) else "invalid duration"
        raise ValueError(f'invalid argument "{v}" for "--timeout" flag: time: {why} "{v}"')
    for flag in ("--grace-period", "--skip-wait-for-delete-timeout"):
        v = flags.get(flag)
        if v is not None and not re.fullmatch(r"-?[0-9]+", v):
            raise ValueError(
                f'invalid argument "{v}" for "{flag}" flag: strconv.ParseInt: '
                f'parsing "{v}": invalid syntax'
            )
    return pos, flags


HELMCHART_KINDS = (
    "helmcharts",
    "helmchart",
    "helmcharts.helm.cattle.io",
    "helmchart.helm.cattle.io",
)


def get_helmcharts(
    req: object, fail: object, names: list[str], flags: dict[str, str], output: str
) -> int:
    """``kubectl get helmcharts [NAME] [-n NS | -A] [-o json]``: what helm-controller
    installed (HelmCharts in server/manifests whose chartContent is a chart)."""
    assert callable(req) and callable(fail)
    all_ns = flags.get("-A") == "true" or flags.get("--all-namespaces") == "true"
    ns = flags.get("-n") or flags.get("--namespace") or "default"
    # upstream: kubernetes/kubernetes staging/src/k8s.io/cli-runtime/pkg/resource/builder.go (by name across all namespaces) [CONTRACT KC3]
    if all_ns and names:
        print(
            "error: a resource cannot be retrieved by name across all namespaces", file=sys.stderr
        )
        return 1
    base = "/apis/helm.cattle.io/v1"
    code, data = req("GET", base + ("/helmcharts" if all_ns else f"/namespaces/{ns}/helmcharts"))
    if code != 200:
        return int(fail(code, data))
    obj = json.loads(data)
    items = obj["items"]
    if names:
        items = [i for i in items if i["metadata"]["name"] in names]
        missing = [n for n in names if n not in {i["metadata"]["name"] for i in items}]
        for n in missing:
            msg = f'helmcharts.helm.cattle.io "{n}" not found'
            print(f"Error from server (NotFound): {msg}", file=sys.stderr)
        if missing and flags.get("--ignore-not-found") != "true":
            return 1
        obj = dict(obj, items=items)
        if len(names) == 1 and items:
            obj = items[0]
    if output == "json":
        print(json.dumps(obj, indent=4))
        return 0
    if output:
        print(
            f"error: the stand-in kubectl supports -o json only here, not {output}", file=sys.stderr
        )
        return 1
    if not items:
        where = "" if all_ns else f" in {ns} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
        return 0
    rows = [(["NAMESPACE"] if all_ns else []) + ["NAME", "CHART", "VERSION", "TARGETNAMESPACE"]]
    for i in items:
        st = i["status"]
        md = i["metadata"]
        row = [md["name"], st["chart"], st["version"], i["spec"]["targetNamespace"]]
        rows.append(([md["namespace"]] if all_ns else []) + row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def delete_helmcharts(req: object, fail: object, names: list[str], flags: dict[str, str]) -> int:
    """``kubectl delete helmchart NAME... [-n NS] [--ignore-not-found]``."""
    assert callable(req) and callable(fail)
    ns = flags.get("-n") or flags.get("--namespace") or "default"
    rc = 0
    for name in names:
        code, data = req("DELETE", f"/apis/helm.cattle.io/v1/namespaces/{ns}/helmcharts/{name}")
        if code == 404 and flags.get("--ignore-not-found") == "true":
            continue
        if code != 200:
            rc = int(fail(code, data))
        else:
            print(f'helmchart.helm.cattle.io "{name}" deleted')
    return rc


def go_seconds(value: str) -> float:
    """A Go duration (``90s``, ``1m30s``, ``0``) in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ns|us|\u00b5s|ms|s|m|h)", value)
    )


# upstream: kubernetes/kubernetes staging/src/k8s.io/kubectl/pkg/cmd/delete/delete.go (--wait=true: until the object is gone; --timeout=0 waits a week) [CONTRACT ET9]
def wait_deleted(req: typing.Callable[..., tuple[int, bytes]], path: str, timeout: str) -> bool:
    """Wait until ``path`` answers 404 (an object with finalizers stays until they are
    lifted); False when ``timeout`` ran out first."""
    seconds = go_seconds(timeout) or 168 * 3600.0
    deadline = time.monotonic() + seconds
    while req("GET", path)[0] != 404:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def kubectl(argv: list[str]) -> int:
    try:
        pos, flags = parse_kubectl_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    kubeconfig = flags.get("--kubeconfig") or (
        os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    )
    server_override = flags.get("-s") or flags.get("--server") or ""
    output = flags.get("-o") or flags.get("--output") or ""
    raw = flags.get("--raw", "")
    ignore_not_found = flags.get("--ignore-not-found") == "true"
    # upstream: kubernetes/kubernetes staging/src/k8s.io/kubectl/pkg/cmd/util/helpers.go (localhost:8080 refused) [CONTRACT KC2]
    try:
        with open(kubeconfig) as f:
            kc = f.read()
    except OSError:
        print(
            "error: The connection to the server localhost:8080 was refused - "
            "did you specify the right host or port?",
            file=sys.stderr,
        )
        return 1
    m = re.search(r"^\s*server:\s*(\S+)", kc, re.M)
    url = server_override or (m.group(1) if m else "https://127.0.0.1:6443")
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 443
    try:
        ctx = kubeconfig_ctx(kc) if u.scheme == "https" else None
    except (OSError, ssl.SSLError, ValueError) as e:
        print(f"error: invalid kubeconfig {kubeconfig}: {e}", file=sys.stderr)
        return 1

    def req(
        method: str, path: str, body: object = None, ctype: str = "application/json"
    ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        conn: http.client.HTTPConnection
        if ctx is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=10, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            headers = {"Accept": "application/json", "User-Agent": f"kubectl/{TAG} (mk8s stand-in)"}
            if data is not None:
                headers["Content-Type"] = ctype
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def fail(code: int, data: bytes) -> int:
        try:
            msg = json.loads(data).get("message", "")
        except ValueError:
            msg = data.decode(errors="replace")
        if code == 401:
            print("error: You must be logged in to the server (Unauthorized)", file=sys.stderr)
        elif code in REASONS:
            print(f"Error from server ({REASONS[code]}): {msg}", file=sys.stderr)
        else:
            print(f"Error from server: {msg} (HTTP {code})", file=sys.stderr)
        return 1

    try:
        verb = pos[0] if pos else ""
        if verb == "get" and raw:
            code, data = req("GET", raw)
            if code != 200:
                return fail(code, data)
            print(data.decode())
            return 0
        if verb == "version":
            code, data = req("GET", "/version")
            if code != 200:
                return fail(code, data)
            print(f"Client Version: {TAG}\nServer Version: {json.loads(data)['gitVersion']}")
            return 0
        if verb == "get" and len(pos) >= 2 and pos[1] in HELMCHART_KINDS:
            return get_helmcharts(req, fail, pos[2:], flags, output)
        if verb == "delete" and len(pos) >= 3 and pos[1] in HELMCHART_KINDS:
            return delete_helmcharts(req, fail, pos[2:], flags)
        kinds = ("nodes", "node", "no")
        if verb == "get" and len(pos) >= 2 and pos[1] in kinds:
            path = "/api/v1/nodes" + (f"/{pos[2]}" if len(pos) > 2 else "")
            code, data = req("GET", path)
            if code == 404 and ignore_not_found and len(pos) > 2:
                return 0  # kubectl get --ignore-not-found: nothing, exit 0
            if code != 200:
                return fail(code, data)
            obj = json.loads(data)
            items = obj.get("items", [obj])
            if output == "json":
                print(json.dumps(obj, indent=4))
                return 0
            if output == "name":
                for it in items:
                    print(f"node/{it['metadata']['name']}")
                return 0
            rows = [["NAME", "STATUS", "ROLES", "AGE", "VERSION"]]
            if output == "wide":
                rows[0] += ["INTERNAL-IP"]
            for it in items:
                md, st = it["metadata"], it["status"]
                created = datetime.datetime.strptime(
                    md["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"
                ).replace(tzinfo=datetime.UTC)
                row = [
                    md["name"],
                    node_status_word(it),
                    node_roles(it),
                    age(created.timestamp()),
                    st["nodeInfo"]["kubeletVersion"],
                ]
                if output == "wide":
                    row.append(st["addresses"][0]["address"])
                rows.append(row)
            if len(rows) == 1:
                print("No resources found", file=sys.stderr)
                return 0
            widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
            for r in rows:
                print("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
            return 0
        if verb == "delete" and len(pos) >= 3 and pos[1] in kinds:
            rc = 0
            for name in pos[2:]:
                code, data = req("DELETE", f"/api/v1/nodes/{name}")
                if code == 404 and ignore_not_found:
                    continue
                if code != 200:
                    rc = fail(code, data)
                    continue
                print(f'node "{name}" deleted')
                if not wait_deleted(req, f"/api/v1/nodes/{name}", flags.get("--timeout", "0")):
                    print(f"error: timed out waiting for the condition on nodes/{name}",
                          file=sys.stderr)  # fmt: skip
                    rc = 1
            return rc
        if verb in ("cordon", "uncordon", "drain") and len(pos) >= 2:
            # like kubectl: read the node, patch spec.unschedulable only when it changes
            name = pos[1]
            code, data = req("GET", f"/api/v1/nodes/{name}")
            if code != 200:
                return fail(code, data)
            want = verb != "uncordon"
            if bool(json.loads(data)["spec"].get("unschedulable")) == want:
                print(f"node/{name} already {'cordoned' if want else 'uncordoned'}")
            else:
                body = {"spec": {"unschedulable": True if want else None}}
                ctype = "application/strategic-merge-patch+json"
                code, data = req("PATCH", f"/api/v1/nodes/{name}", body, ctype)
                if code != 200:
                    return fail(code, data)
                print(f"node/{name} {'cordoned' if want else 'uncordoned'}")
            if verb == "drain":
                q = urllib.parse.quote(f"spec.nodeName={name}")
                code, data = req("GET", f"/api/v1/pods?fieldSelector={q}")
                if code != 200:
                    return fail(code, data)
                # upstream: none (stand-in limitation: it cannot evict pods; it runs none); stricter [CONTRACT KC4]
                if json.loads(data).get("items"):
                    print("error: the stand-in kubectl cannot evict pods", file=sys.stderr)
                    return 1
                print(f"node/{name} drained")
            return 0
    except ssl.SSLCertVerificationError as e:
        print(
            f"Unable to connect to the server: tls: failed to verify certificate: {e.verify_message}",
            file=sys.stderr,
        )
        return 1
    except (OSError, http.client.HTTPException) as e:
        print(
            f"The connection to the server {host}:{port} was refused - "
            f"did you specify the right host or port? ({e})",
            file=sys.stderr,
        )
        return 1
    print(f"error: the stand-in kubectl does not support: {' '.join(argv)}", file=sys.stderr)
    return 1


# ---- etcd-snapshot ---------------------------------------------------------------------
SNAPSHOT_FLAGS = ("--name", "--dir", "--etcd-snapshot-dir", "--config", "-c", "--data-dir", "-d")


def parse_flags(
    args: list[str], flags: tuple[str, ...], aliases: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """urfave/cli-style ``--flag value`` / ``--flag=value`` parsing: (flags, arguments);
    raises ValueError with its message for an unknown flag or a missing value."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        flag, eq, val = args[i].partition("=")
        i += 1
        if not flag.startswith("-"):
            rest.append(args[i - 1])
            continue
        if flag not in flags:
            raise ValueError(f"flag provided but not defined: {flag}")
        if not eq:
            if i >= len(args):
                raise ValueError(f"flag needs an argument: {flag}")
            val, i = args[i], i + 1
        opts[aliases.get(flag, flag)] = val
    return opts, rest


# upstream: k3s-io/k3s pkg/cli/etcdsnapshot/etcd_snapshot.go (save, list, delete), rancher/rke2 pkg/cli/cmds/etcd_snapshot.go [CONTRACT ES1 ES3]
def etcd_snapshot(args: list[str]) -> int:
    """``rke2 etcd-snapshot [save|ls|list|l|delete] [--name NAME] [--dir DIR] [NAME...]``
    (k3s pkg/cli/etcdsnapshot): the running server on this node does it (``/db/snapshot``
    on 9345, authenticated with the token in server/token); ``save`` writes
    ``DIR/NAME-<node name>-<unix time>`` (default NAME ``on-demand``, DIR
    server/db/snapshots or ``etcd-snapshot-dir``).  An agent has no etcd."""
    sub = "save"
    if args and not args[0].startswith("-"):
        sub, args = args[0], args[1:]
    if sub not in ("save", "ls", "list", "l", "delete"):
        print(f'rke2 etcd-snapshot: No help topic for "{sub}"', file=sys.stderr)
        return 3
    aliases = {"-c": "--config", "-d": "--data-dir", "--etcd-snapshot-dir": "--dir"}
    try:
        opts, names = parse_flags(args, SNAPSHOT_FLAGS, aliases)
    except ValueError as e:
        print(f"Incorrect Usage: {e}", file=sys.stderr)
        return 1
    if names and sub != "delete":
        log("this command does not take any arguments", "fatal")
        return 1
    if sub == "delete" and not names:
        log("no snapshots given for removal", "fatal")
        return 1
    try:
        cfg = load_config(opts.get("--config", CONFIG))
    except (Fatal, OSError) as e:
        log(str(e), "fatal")
        return 1
    # data-dir and etcd-snapshot-dir come from config.yaml, as for `rke2 server`.
    use_config_paths({**cfg, **({"data-dir": opts["--data-dir"]} if "--data-dir" in opts else {})})
    body: dict = {"operation": {"ls": "list", "l": "list"}.get(sub, sub), "names": names}
    body["dir"] = opts.get("--dir") or cfg_str(cfg, "etcd-snapshot-dir") or SNAPSHOT_DIR
    body["name"] = opts.get("--name", "on-demand")
    out = snapshot_request(body)
    if out is None:
        return 1
    if sub in ("ls", "list", "l"):
        sys.stdout.write(snapshots.format_snapshots(out.get("items", [])))
    elif sub == "delete":
        for n in names:
            if n in out.get("deleted", []):
                log(f"Snapshot {n} deleted.")
            else:
                log(f"Snapshot {n} not found.", "warning")
    else:
        log(f"Saving etcd snapshot to {out['path']}")
        for n in out.get("created", []):
            log(f"Snapshot {n} saved.")
    return 0


def snapshot_request(body: dict) -> dict | None:
    """POST /db/snapshot to this node's server with the token in server/token."""
    try:
        with open(TOKEN_FILE) as f:
            token = f.read().strip()
    except FileNotFoundError:
        log(
            f"open {TOKEN_FILE}: no such file or directory: this node is not an etcd server "
            "(agents have no etcd to snapshot)",
            "fatal",
        )
        return None
    except OSError as e:
        log(f"open {TOKEN_FILE}: {e.strerror}", "fatal")
        return None
    url = f"https://127.0.0.1:{SUPERVISOR_PORT}/db/snapshot"
    try:
        with open(f"{TLS_DIR}/server-ca.crt") as f:
            ca_pem = f.read()
        out = call(
            "127.0.0.1", SUPERVISOR_PORT, "POST", "/db/snapshot", body, timeout=120,
            ctx=client_ctx(ca_pem), headers={"X-Mk8s-Peer": sha(token_secret(token)[1])},
        )  # fmt: skip
    except HTTPFail as e:
        log(f"etcd-snapshot failed: {e.message}: see server log for details", "fatal")
        return None
    except (OSError, ValueError) as e:
        log(f'Post "{url}": {e} (is rke2-server running?)', "fatal")
        return None
    return out if isinstance(out, dict) else {}


# ---- etcd: rke2 certificate rotate (k3s pkg/cli/cert) -----------------------------------
def certificate(args: list[str]) -> int:
    """``rke2 certificate rotate``: back up server/tls and delete the leaf certificates and
    keys; the next start makes new ones, with the same CAs (mk8s_standin/certs.py)."""
    if not args or args[0] != "rotate":
        print(f'rke2 certificate: No help topic for "{args[0] if args else ""}"', file=sys.stderr)
        return 3
    aliases = {"-d": "--data-dir", "-c": "--config"}
    try:
        opts, rest = parse_flags(args[1:], ("--data-dir", "-d", "--config", "-c"), aliases)
        cfg = load_config(opts.get("--config", CONFIG))
    except ValueError as e:
        print(f"Incorrect Usage: {e}", file=sys.stderr)
        return 1
    except (Fatal, OSError) as e:
        log(str(e), "fatal")
        return 1
    if rest:
        log("the stand-in rotates all certificates (no arguments, no --service)", "fatal")
        return 1
    use_config_paths({**cfg, **({"data-dir": opts["--data-dir"]} if "--data-dir" in opts else {})})
    server = os.path.isdir(SERVER_DIR)
    log("Server detected, rotating agent and server certificates" if server
        else "Agent detected, rotating agent certificates")  # fmt: skip
    try:
        backup, deleted = certs.rotate(SERVER_DIR, DATA_DIR + "/agent")
    except (OSError, certs.CertError) as e:
        log(f"rotating certificates: {e}", "fatal")
        return 1
    for f in deleted:
        log(f"Certificate {f} is deleted")
    log(
        f"Successfully backed up certificates to {backup}, please restart rke2 server or "
        "agent to rotate certificates"
    )
    return 0


def server_flags(args: list[str]) -> dict[str, object]:
    """``rke2 server`` flags over config.yaml: --config, --token, --cluster-reset,
    --cluster-reset-restore-path (k3s pkg/cli/cmds/server.go)."""
    out: dict[str, object] = {}
    i = 0
    while i < len(args):
        flag, eq, val = args[i].partition("=")
        i += 1
        if flag == "--cluster-reset":
            out["cluster-reset"] = val != "false" if eq else True
            continue
        if flag not in ("-c", "--config", "-t", "--token", "--cluster-reset-restore-path"):
            raise Fatal(f"Incorrect Usage: flag provided but not defined: {flag}")
        if not eq:
            if i >= len(args):
                raise Fatal(f"Incorrect Usage: flag needs an argument: {flag}")
            val, i = args[i], i + 1
        out[{"-c": "config", "--config": "config", "-t": "token"}.get(flag, flag.lstrip("-"))] = val
    if out.get("cluster-reset-restore-path") and not out.get("cluster-reset"):
        raise Fatal("invalid flag use; --cluster-reset required with --cluster-reset-restore-path")
    return out


def terminate(*_: object) -> None:
    """SIGTERM: stop etcd (so a restart finds its ports and data free), then exit."""
    member = RUNNING.get("member")
    if member is not None:
        member.stop(timeout=8)
    os._exit(0)


# ---- entry ---------------------------------------------------------------------------
# ---- what RKE2 reads only at start (and what it keeps reading) -------------------------
# registries.yaml: "Upon startup, RKE2 will check to see if registries.yaml exists" and
# generates containerd's configuration from it (rancher/rke2-docs
# docs/install/private_registry.md); k3s writes it when the agent starts
# (k3s-io/k3s pkg/agent/containerd/config.go: writeContainerdConfig puts each
# registry's auth into config.toml, which containerd reads when it starts, with RKE2;
# writeContainerdHosts writes certs.d/HOST/hosts.toml with the mirror endpoints and the
# *path* of the CA, pkg/agent/templates/templates.go).  The stand-in writes that
# generated copy, as JSON, to LOADED_REGISTRIES at each start; `rke2 mk8s-pull REF`
# pulls as `crictl pull` does through containerd: with the mirrors and credentials of
# that copy (a registries.yaml changed since is not read), and the CA file read at
# pull time (containerd reads hosts.toml's `ca` files when it resolves a host).
LOADED_REGISTRIES = "/agent/etc/containerd/mk8s-standin-registries.json"  # under DATA_DIR
# Image archives placed while running: watch_images (gates.py), one file at a time.
WATCH_SECONDS = 0.5


# upstream: rancher/rke2-docs docs/install/private_registry.md; k3s-io/k3s pkg/agent/containerd/config.go [CONTRACT RG6]
def load_start_inputs() -> None:
    """What a starting node loads once: containerd's registry configuration."""
    write_file(DATA_DIR + LOADED_REGISTRIES, json.dumps(load_registries(), sort_keys=True), 0o600)


def _image_files() -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    if os.path.isdir(IMAGES_DIR):
        for n in os.listdir(IMAGES_DIR):
            p = os.path.join(IMAGES_DIR, n)
            if n.endswith(IMAGE_SUFFIXES) and os.path.isfile(p):
                st = os.stat(p)
                out[n] = (st.st_size, st.st_mtime_ns)
    return out


def import_while_running(name: str) -> None:
    """Import one archive into the running node's store (IMPORTED_IMAGES)."""
    p = os.path.join(IMAGES_DIR, name)
    st = os.stat(p)
    key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    try:
        rec: dict = {"key": key, "images": import_archive(p)}
    except ImageImportError as e:
        rec = {"key": key, "images": [], "error": str(e)}
        log(f"Failed to import {p}: {e}", "error")
    try:
        with open(IMPORTED_IMAGES) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {"files": {}, "images": []}
    data["files"][name] = rec
    data["images"] = [i for i in data["images"] if i.get("file") != name]
    data["images"] += [dict(i, file=name) for i in rec["images"]]
    write_file(IMPORTED_IMAGES, json.dumps(data, indent=1, sort_keys=True), 0o644)
    if not rec.get("error"):
        log(f"Imported images from {p} (while running)")


# upstream: k3s-io/k3s pkg/agent/templates/templates.go (hosts.toml: endpoints, ca path), config.go (auth in config.toml) [CONTRACT RG6]
def pull(args: list[str]) -> int:
    """``rke2 mk8s-pull REF``: pull REF's manifest with containerd's configuration as
    loaded at the last start (LOADED_REGISTRIES): each mirror endpoint of REF's
    registry in turn (the registry itself when it has none), with that endpoint's
    credentials and CA.  Exit 0 and ``pulled REF from ENDPOINT``, or 1 and why."""
    if len(args) != 1:
        print("usage: rke2 mk8s-pull REF", file=sys.stderr)
        return 2
    ref = args[0]
    with contextlib.suppress(Fatal):
        use_config_paths(load_config(CONFIG))  # containerd's files follow data-dir
    try:
        with open(DATA_DIR + LOADED_REGISTRIES) as f:
            loaded = json.load(f)
    except OSError:
        print("rke2: containerd has no configuration: RKE2 never started here", file=sys.stderr)
        return 1
    registry, repo, tag = split_image(ref)
    mirror = (loaded.get("mirrors") or {}).get(registry) or {}
    endpoints = list(mirror.get("endpoint") or []) or [f"https://{registry}"]
    why = []
    for ep in endpoints:
        u = urllib.parse.urlsplit(ep if "://" in ep else "https://" + ep)
        conf = (loaded.get("configs") or {}).get(u.netloc) or {}
        err = _pull_manifest(u, repo, tag, conf if isinstance(conf, dict) else {})
        if err is None:
            print(f"pulled {ref} from {ep}")
            return 0
        why.append(f"{ep}: {err}")
    print(f"rke2: failed to pull {ref}: {'; '.join(why)}", file=sys.stderr)
    return 1


def _pull_manifest(u: urllib.parse.SplitResult, repo: str, tag: str, conf: dict) -> str | None:
    tls = conf.get("tls") if isinstance(conf.get("tls"), dict) else {}
    auth = conf.get("auth") if isinstance(conf.get("auth"), dict) else {}
    try:
        ctx = ssl.create_default_context(cafile=str(tls.get("ca_file") or "") or None)
    except (OSError, ssl.SSLError) as e:
        return f"cannot load ca_file {tls.get('ca_file')}: {e}"
    headers = {"Accept": MANIFEST_ACCEPT}
    if auth.get("username"):
        headers["Authorization"] = "Basic " + b64(f"{auth['username']}:{auth.get('password', '')}")
    try:
        conn = http.client.HTTPSConnection(u.hostname or "", u.port or 443, timeout=5, context=ctx)
        try:
            conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers=headers)
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        return str(e)
    return None if resp.status == 200 else f"{resp.status} {resp.reason}"


# HelmCharts: each time a server starts, RKE2 passes cluster settings to every HelmChart
# in server/manifests (rancher/rke2 pkg/bootstrap/bootstrap.go: UpdateManifests ->
# setChartValues -> rewriteChart): each *.yaml/*.yml file whose objects decode, and in it
# each helm.cattle.io/v1 HelmChart whose annotation rke2.cattle.io/inject-cluster-config
# (else RKE2_INJECT_CLUSTER_CONFIG, else true: injectDefault up to v1.35) is true, gets
# spec.set["global.*"] set where it differs; a changed file is re-encoded and rewritten
# in place (same inode: truncate and write).  v1.28's value set (no global.prime.*).
INJECT_ANNOTATION = "rke2.cattle.io/inject-cluster-config"


def chart_values(cfg: dict[str, object]) -> dict[str, str]:
    cidrs = cfg_str(cfg, "cluster-cidr", "10.42.0.0/16").split(",")
    registry = cfg_str(cfg, "system-default-registry")
    return {
        "global.clusterCIDR": ",".join(cidrs),
        "global.clusterCIDRv4": ",".join(c for c in cidrs if ":" not in c),
        "global.clusterCIDRv6": ",".join(c for c in cidrs if ":" in c),
        "global.clusterDNS": cfg_str(cfg, "cluster-dns", "10.43.0.10"),
        "global.clusterDomain": cfg_str(cfg, "cluster-domain", "cluster.local"),
        "global.rke2DataDir": cfg_str(cfg, "data-dir", DATA_DIR),
        "global.serviceCIDR": cfg_str(cfg, "service-cidr", "10.43.0.0/16"),
        "global.systemDefaultIngressClass": (
            cfg_list(cfg, "ingress-controller") or ["ingress-nginx"]
        )[0],
        "global.systemDefaultRegistry": registry,
        "global.cattle.systemDefaultRegistry": registry,
    }


def _inject(obj: dict) -> bool:
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    anns = md.get("annotations") if isinstance(md.get("annotations"), dict) else {}
    for v in (anns.get(INJECT_ANNOTATION), os.environ.get("RKE2_INJECT_CLUSTER_CONFIG")):
        if str(v).lower() in ("true", "1", "t"):
            return True
        if str(v).lower() in ("false", "0", "f"):
            return False
    return True


# upstream: rancher/rke2 pkg/bootstrap/bootstrap.go (UpdateManifests, setChartValues, rewriteChart) [CONTRACT MF5]
def rewrite_helmcharts(cfg: dict[str, object]) -> None:
    values = chart_values(cfg)
    if not os.path.isdir(MANIFESTS_DIR):
        return
    for name in sorted(os.listdir(MANIFESTS_DIR)):
        p = os.path.join(MANIFESTS_DIR, name)
        if not name.endswith((".yaml", ".yml")) or not os.path.isfile(p):
            continue
        try:
            with open(p) as f:
                docs = [parse_yaml_tree(d, name) for _, d in _documents(f.read())]
        except (OSError, UnicodeDecodeError, Fatal, ManifestError) as e:
            log(f"Failed to decode manifest {p}: {e}", "warning")
            continue
        changed = False
        for obj in docs:
            if not isinstance(obj, dict) or obj.get("kind") != "HelmChart":
                continue
            if obj.get("apiVersion") != "helm.cattle.io/v1" or not _inject(obj):
                continue
            spec = obj.setdefault("spec", {})
            given = spec.get("set") if isinstance(spec, dict) else None
            if not isinstance(spec, dict) or not isinstance(given or {}, dict):
                continue
            new = dict(given or {})
            if any(not isinstance(new.get(k, ""), str) for k in values):
                continue  # NestedString fails on a non-string: the object is left alone
            for k, v in values.items():
                if new.get(k, "") != v:
                    new[k], changed = v, True
            spec["set"] = new
        if changed:
            with open(p, "r+") as f:
                f.truncate(0)
                f.write("---\n".join(emit_yaml(d) for d in docs))
            log(f"Updated manifest {p} to set cluster configuration values")


def emit_yaml(value: object, indent: int = 0) -> str:
    """Block YAML, keys sorted (as sigs.k8s.io/yaml writes), scalars as JSON."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        out = ""
        for k in sorted(value):
            key = k if re.fullmatch(r"[A-Za-z0-9_./-]+", k) else json.dumps(k)
            v = value[k]
            if isinstance(v, dict | list) and v:
                out += f"{pad}{key}:\n" + emit_yaml(v, indent + 2)
            else:
                out += f"{pad}{key}: {emit_yaml(v).strip()}\n"
        return out
    if isinstance(value, list) and value:
        out = ""
        for v in value:
            if isinstance(v, dict | list) and v:
                out += f"{pad}-\n" + emit_yaml(v, indent + 2)
            else:
                out += f"{pad}- {emit_yaml(v).strip()}\n"
        return out
    return pad + json.dumps(value) + "\n"


def main(argv: list[str]) -> int:
    prog = os.path.basename(argv[0])
    if prog == "kubectl":
        return kubectl(argv[1:])
    args = argv[1:]
    # upstream: rancher/rke2 install.sh (setup_arch: one tarball per arch); execve ENOEXEC [CONTRACT CL1]
    if node_arch() != ARCH:  # the shell cannot execute it: nothing runs, not even --version
        print(f"{argv[0]}: cannot execute binary file: Exec format error", file=sys.stderr)
        return 126
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "usage: rke2 [--version] server|agent [--config FILE]\n"
            "       rke2 server --cluster-reset [--cluster-reset-restore-path FILE] [--token T]\n"
            "       rke2 etcd-snapshot [save|ls|delete] [--name NAME] [--dir DIR] [NAME...]\n"
            "       rke2 certificate rotate\n"
            "       rke2 mk8s-images   (the images this node imported, JSON)\n"
            "       rke2 mk8s-pull REF (pull with the registry settings loaded at start)"
        )
        return 0
    if args[0] in ("--version", "-v", "version"):
        print(f"rke2 version {TAG} (mk8s stand-in)\ngo version go1.22.8 X:boringcrypto")
        return 0
    cmd = args[0]
    if cmd == "etcd-snapshot":
        return etcd_snapshot(args[1:])
    if cmd == "certificate":
        return certificate(args[1:])
    if cmd == "mk8s-images":
        return show_images()
    if cmd == "mk8s-pull":
        return pull(args[1:])
    # upstream: urfave/cli help.go (No help topic, exit 3) [CONTRACT CL2]
    if cmd not in ("server", "agent"):
        print(f'rke2: No help topic for "{cmd}"', file=sys.stderr)
        return 3
    return service(cmd, args[1:])


def service(cmd: str, args: list[str]) -> int:
    """``rke2 server|agent [flags]``: run until stopped, or refuse with a fatal line."""
    flags: dict[str, object] = {"config": CONFIG}
    for i, a in enumerate(args):
        if cmd == "agent" and a in ("-c", "--config") and i + 1 < len(args):
            flags["config"] = args[i + 1]
        elif cmd == "agent" and a.startswith("--config="):
            flags["config"] = a.split("=", 1)[1]
    signal.signal(signal.SIGTERM, terminate)
    try:
        if cmd == "server":
            flags |= server_flags(args)
        log(f"Starting rke2 {TAG} ({cmd})")
        cfg = load_config(str(flags.pop("config")))
        cfg.update(flags)
        use_config_paths(cfg)
        check_host(cfg, cmd)
        if cmd == "agent":
            warn_dropped_keys(cfg)
        if cmd == "server" and cfg.get("cluster-reset") in (True, "true"):
            return cluster_reset(cfg)
        if cmd == "server":
            run_server(cfg)
            record_version("server")
            log("rke2 is up and running")
            sd_notify("READY=1")
            while True:
                time.sleep(3600)
        else:
            run_agent(cfg)
    except Fatal as e:
        log(str(e), "fatal")
        member = RUNNING.get("member")
        if member is not None:
            member.stop()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
