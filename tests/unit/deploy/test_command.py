"""Commands as values: exact rendered and masked text, no secret ever displayed."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest

from mk8s.deploy.command import MASK, Command, Secret, as_user, write_file
from mk8s.deploy.fileupload import FileUpload

TOKEN = "K10abc::server:deadbeef"


def test_secret_never_prints() -> None:
    s = Secret(TOKEN)
    assert str(s) == MASK
    assert repr(s) == "Secret('***')"
    assert f"{s}" == MASK
    assert f"{s:>30}" == MASK
    assert "%s" % (s,) == MASK  # noqa: UP031  (logging uses %-formatting)
    assert s.reveal() == TOKEN
    assert Secret(s) == s
    assert len({Secret("a"), Secret("a")}) == 1
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_argv_quotes_each_word() -> None:
    c = Command.argv("ls", "-l", "/a b", "it's", "$HOME", "")
    assert c.render() == "ls -l '/a b' 'it'\"'\"'s' '$HOME' ''"
    assert c.display() == c.render()
    assert str(c) == c.display()


def test_secret_argument_rendered_and_masked() -> None:
    c = Command.argv("rke2", "--token", Secret("a b"))
    assert c.render() == "rke2 --token 'a b'"
    assert c.display() == "rke2 --token ***"
    assert "a b" not in repr(c)


def test_script_template_quotes_values_only() -> None:
    c = Command.script("test -f {p} || echo {t} > {p}", {"p": "/etc/x y", "t": Secret(TOKEN)})
    assert c.compound
    assert c.render() == f"test -f '/etc/x y' || echo {TOKEN} > '/etc/x y'"
    assert c.display() == "test -f '/etc/x y' || echo *** > '/etc/x y'"
    assert Command.script("echo {{literal}}").render() == "echo {literal}"
    with pytest.raises(KeyError):
        Command.script("echo {missing}")
    with pytest.raises(ValueError, match="format specs"):
        Command.script("echo {x:>3}", {"x": "a"})


def test_env_prefix_simple_and_compound() -> None:
    c = Command.argv("sh", "install.sh", env={"INSTALL_RKE2_ARTIFACT_PATH": "/var/lib/mk8s/b 1"})
    assert c.render() == "env INSTALL_RKE2_ARTIFACT_PATH='/var/lib/mk8s/b 1' sh install.sh"
    s = Command.script("cd /tmp && ./x", env={"A": "1", "TOKEN": Secret(TOKEN)})
    assert s.render() == f"env A=1 TOKEN={TOKEN} sh -c 'cd /tmp && ./x'"
    assert s.display() == "env A=1 TOKEN=*** sh -c 'cd /tmp && ./x'"
    with pytest.raises(ValueError, match="environment variable"):
        Command.argv("true", env={"BAD-NAME": "x"})


def test_as_user_root_and_non_root() -> None:
    c = Command.argv("systemctl", "enable", "rke2-server", sudo=True)
    assert as_user(c, "root") is c
    ops = as_user(c, "ops")
    assert ops.render() == "sudo -n systemctl enable rke2-server"
    assert not ops.sudo
    assert as_user(ops, "ops") is ops  # idempotent
    plain = Command.argv("uname", "-m")
    assert as_user(plain, "ops") is plain


def test_as_user_wraps_compound_and_env() -> None:
    s = Command.script("echo {t} > /etc/t && chmod 0600 /etc/t", {"t": Secret(TOKEN)}, sudo=True)
    assert as_user(s, "ops").display() == "sudo -n sh -c 'echo *** > /etc/t && chmod 0600 /etc/t'"
    assert as_user(s, "ops").render() == (
        f"sudo -n sh -c 'echo {TOKEN} > /etc/t && chmod 0600 /etc/t'"
    )
    e = Command.script("a && b", env={"K": "v w"}, sudo=True)
    assert as_user(e, "ops").render() == "sudo -n env K='v w' sh -c 'a && b'"
    f = Command.argv("sh", "install.sh", env={"K": Secret("v")}, sudo=True)
    assert as_user(f, "ops").display() == "sudo -n env K=*** sh install.sh"


def test_quoted_secret_inside_sh_c_is_real_shell() -> None:
    # The nested quoting must survive a real shell: run it locally.
    value = 'it\'s $(not run) `x` "q"'
    s = Command.script("printf %s {v}", {"v": Secret(value)}, env={"X": "1"})
    out = subprocess.run(["sh", "-c", s.render()], capture_output=True, text=True, check=True)
    assert out.stdout == value
    assert value not in s.display()


def test_mask_and_secrets() -> None:
    c = Command.argv("x", Secret("aaa"), env={"E": Secret("bbb")}, stdin=Secret("ccc"))
    assert set(c.secrets()) == {"aaa", "bbb", "ccc"}
    assert c.mask("aaa bbb ccc ddd") == "*** *** *** ddd"
    assert c.stdin_bytes() == b"ccc"
    assert "ccc" not in repr(c)


def test_write_file_content_on_stdin() -> None:
    c = write_file("/etc/rancher/rke2/config.yaml", Secret("token: abc\n"), mode=0o600)
    expected = (
        "mkdir -p /etc/rancher/rke2 && umask 077"
        " && cat > /etc/rancher/rke2/config.yaml.mk8s-tmp"
        " && chmod 0600 /etc/rancher/rke2/config.yaml.mk8s-tmp"
        " && mv -f /etc/rancher/rke2/config.yaml.mk8s-tmp /etc/rancher/rke2/config.yaml"
    )
    assert c.render() == expected
    assert c.display() == expected  # the content is not on the command line at all
    assert c.stdin_bytes() == b"token: abc\n"
    assert c.sudo
    assert as_user(c, "ops").render() == f"sudo -n sh -c '{expected}'"
    assert c.description == "write /etc/rancher/rke2/config.yaml (0600)"
    with pytest.raises(ValueError, match="absolute"):
        write_file("relative", b"x")


def test_write_file_runs_locally(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.txt"
    c = write_file(str(target), "hello\n", mode=0o640)
    subprocess.run(["sh", "-c", c.render()], input=c.stdin_bytes(), check=True)
    assert target.read_text() == "hello\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / "d" / "f.txt.mk8s-tmp").exists()


def test_command_validation() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Command.argv("true", timeout=0)
    with pytest.raises(ValueError, match="empty"):
        Command.argv()


def test_file_upload_from_bytes_secret() -> None:
    u = FileUpload.from_bytes(
        b"token: s3cr3t\n", "/etc/rancher/rke2/config.yaml", mode=0o600, secret=True
    )
    digest = hashlib.sha256(b"token: s3cr3t\n").hexdigest()
    assert u.sha256 == digest
    assert u.size == 14
    assert u.display() == (
        f"upload <secret 14 bytes> -> /etc/rancher/rke2/config.yaml (0600, 14 bytes, sha256 {digest[:16]})"
    )
    assert "s3cr3t" not in repr(u)
    assert u.content() == b"token: s3cr3t\n"


def test_file_upload_from_path(tmp_path: Path) -> None:
    f = tmp_path / "rke2.linux-amd64.tar.gz"
    f.write_bytes(b"x" * 1000)
    u = FileUpload.from_path(f, "/var/lib/mk8s/b/rke2.linux-amd64.tar.gz")
    assert u.sha256 == hashlib.sha256(b"x" * 1000).hexdigest()
    assert u.size == 1000
    assert u.display().startswith(
        f"upload {f} -> /var/lib/mk8s/b/rke2.linux-amd64.tar.gz (0644, 1000"
    )
    pinned = FileUpload.from_path(f, "/x", sha256="0" * 64)
    assert pinned.sha256 == "0" * 64
    with pytest.raises(ValueError, match="sha256"):
        FileUpload.from_path(f, "/x", sha256="XYZ")
    with pytest.raises(ValueError, match="absolute"):
        FileUpload.from_bytes(b"", "x")


# -- pinned: masking, conversions, the quote tracker, write_file's display ---------------
def test_secret_basics() -> None:
    with pytest.raises(TypeError) as e:
        Secret(5)  # type: ignore[arg-type]
    assert str(e.value) == "Secret wraps a str, not int"
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert Secret("a") != "a"  # type: ignore[comparison-overlap]
    assert hash(Secret("a")) == hash(Secret("a")) and hash(Secret("a")) != hash(Secret("b"))
    assert len({Secret("a"), Secret("b"), Secret("a")}) == 2
    assert bool(Secret("x")) and not bool(Secret(""))
    assert Secret(Secret("inner")).reveal() == "inner"


@pytest.mark.parametrize(
    "secrets, text, masked",
    [
        (["abc", "abcdef"], "token=abcdef x=abc", "token=*** x=***"),
        (["xyz", "axyzb"], "k=axyzb", "k=***"),
        (["axyzb", "xyz"], "k=axyzb and xyz", "k=*** and ***"),
    ],
    ids=["prefix", "inside", "inside-reversed"],
)
def test_overlapping_secrets_are_masked_whole(secrets: list[str], text: str, masked: str) -> None:
    cmd = Command.argv("echo", *[Secret(s) for s in secrets])
    assert cmd.mask(text) == masked


def test_secrets_inside_sh_c_and_env() -> None:
    inner = Command.script("echo {t} > /f", {"t": Secret("s1")}, sudo=True, env={"K": Secret("s2")})
    wrapped = as_user(inner, "ops")
    assert set(wrapped.secrets()) == {"s1", "s2"}
    assert "s1" not in wrapped.display() and "s2" not in wrapped.display()
    compound = as_user(Command.script("echo {t} | cat", {"t": Secret("s3")}, sudo=True), "ops")
    assert compound.secrets() == ("s3",)
    assert compound.sudo is False and compound.compound is False
    assert compound.display() == "sudo -n sh -c 'echo *** | cat'"


def test_values_are_converted_to_words() -> None:
    assert Command.argv("cat", Path("/a b"), 5).render() == "cat '/a b' 5"  # type: ignore[arg-type]
    assert Command.script("sleep {n} && ls {p}", {"n": 5, "p": "/x y"}).render() == (
        "sleep 5 && ls '/x y'"
    )


def test_env_is_frozen() -> None:
    env = {"A": "1"}
    cmd = Command.argv("true", env=env)
    env["B"] = "2"
    assert isinstance(cmd.env, MappingProxyType) and dict(cmd.env) == {"A": "1"}


def test_write_file_defaults_and_options() -> None:
    cmd = write_file("/etc/x", "content")
    assert cmd.display() == (
        "mkdir -p /etc && umask 077 && cat > /etc/x.mk8s-tmp && chmod 0644 /etc/x.mk8s-tmp"
        " && mv -f /etc/x.mk8s-tmp /etc/x"
    )
    assert cmd.timeout == 60.0 and cmd.sudo is True
    assert write_file("/etc/x", b"c", timeout=5.0).timeout == 5.0


def test_file_upload_defaults_and_display(tmp_path: Path) -> None:
    up = FileUpload.from_bytes(b"hello", "/etc/h", description="greeting")
    assert (up.mode, up.secret, up.description) == (0o644, False, "greeting")
    sha = hashlib.sha256(b"hello").hexdigest()
    assert up.display() == f"upload <5 bytes> -> /etc/h (0644, 5 bytes, sha256 {sha[:16]})"
    secret = FileUpload.from_bytes(b"k", "/etc/k", mode=0o600, secret=True)
    assert secret.display().startswith("upload <secret 1 bytes> -> /etc/k (0600,")
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    up = FileUpload.from_path(f, "/opt/f", mode=0o755, description="file")
    assert (up.mode, up.description, up.size) == (0o755, "file", 100)
    assert up.sha256 == hashlib.sha256(b"x" * 100).hexdigest()
    assert up.content() == b"x" * 100
    assert FileUpload.from_bytes(b"abc", "/a").content() == b"abc"


def test_empty_command() -> None:
    with pytest.raises(ValueError) as e:
        Command(pieces=())
    assert str(e.value) == "empty command"


INSIDE = [
    "'{v}'",  # a quote as the very first character
    '"{v}"',
    "\\x '{v}'",  # an escape ends after one character
    '"a\\"{v}"',  # an escaped quote does not close the string
    "$('{v}')",  # a quote right after $( opens a string
    "$(x) '{v}'",
    "'$( {v}'",  # $( inside single quotes is text
]


OUTSIDE = [
    "\\'{v}",  # an escaped quote opens nothing
    '\\"{v}',
    "'a' {v}",
    '"a" {v}',
    '"$(printf %s {v})"',  # $( opens a fresh word context
    "$(printf %s {v})",
    "'it''s' {v}",
]


@pytest.mark.parametrize("template", INSIDE)
def test_fields_inside_quotes_are_found(template: str) -> None:
    with pytest.raises(ValueError) as e:
        Command.script(template, {"v": "x"})
    assert str(e.value) == f"field {{v}} is inside a quoted string in {template!r}"


@pytest.mark.parametrize("template", OUTSIDE)
def test_fields_outside_quotes_are_accepted(template: str) -> None:
    assert Command.script(template, {"v": "a b"}).render() == template.replace("{v}", "'a b'")


def test_write_file_shows_plain_content_and_hides_secrets() -> None:
    assert write_file("/etc/x", "a: 1\n").stdin_shown == "a: 1\n"
    assert write_file("/etc/x", b"\xff\xfe").stdin_shown == "<2 bytes>"
    assert write_file("/etc/x", "a: 1\n", shown="a: ***\n").stdin_shown == "a: ***\n"
    assert write_file("/etc/x", Secret("tok")).stdin_shown is None
    assert write_file("/etc/x", Secret("tok"), shown="token: ***").stdin_shown == "token: ***"


# -- hostile values: a field inside quotes is refused, as its own word it stays data -----
# -------------------------------------------------------------------- quoting class
@pytest.mark.parametrize(
    "template",
    [
        'echo "x {v}"',
        "echo 'x {v}'",
        'echo "$(cat "$f") {v}"',
        'a="$(printf \'%s\' "{v}")"',
    ],
)
def test_a_field_inside_quotes_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="inside a quoted string"):
        Command.script(template, {"v": "x"})


@pytest.mark.parametrize(
    "template",
    ["printf %s {v}", 'printf %s "$(printf %s {v})"', 'x={v}; printf %s "$x"'],
)
def test_a_field_as_its_own_word_stays_data(template: str, tmp_path: Path) -> None:
    hostile = "$(touch canary)`touch canary`'\"; touch canary"
    cmd = Command.script(template, {"v": hostile})
    r = subprocess.run(["sh", "-c", cmd.render()], cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout == hostile
    assert not (tmp_path / "canary").exists()
