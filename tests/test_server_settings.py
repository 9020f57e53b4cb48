"""Server start-up: reference flags in both dash styles, the NNF pod's variables as defaults, and
clear one-line errors (exit 1 or 2) for what would stop it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

import pytest
from copy_offload.server.settings import SettingsError, default_state_dir, parse_settings


def test_flags_single_and_double_dash():
    s = parse_settings(["-addr", "127.0.0.1:5000", "--cert", "c.pem", "-cakey=k.pem", "--tokenkey", "t.pem",
                        "-skip-tls", "--skip-token", "-mock"], env={})
    assert (s.host, s.port, s.cert, s.key, s.token_key) == ("127.0.0.1", 5000, "c.pem", "k.pem", "t.pem")
    assert s.skip_tls and s.skip_token and s.driver == "mock"


def test_pod_environment_fills_defaults():
    env = {"TLS_CERT_PATH": "/etc/usercontainer-tls/tls.crt", "TLS_KEY_PATH": "/etc/usercontainer-tls/tls.key",
           "TOKEN_KEY_PATH": "/etc/usercontainer-token/token.key", "NNF_CONTAINER_PORTS": "5123,5124",
           "DW_WORKFLOW_NAME": "fluxjob-1", "DW_WORKFLOW_NAMESPACE": "default", "NNF_NODE_NAME": "rabbit-1"}
    s = parse_settings([], env=env)
    assert (s.host, s.port) == ("", 5123)
    assert (s.cert, s.key, s.token_key) == (env["TLS_CERT_PATH"], env["TLS_KEY_PATH"], env["TOKEN_KEY_PATH"])
    assert (s.workflow_name, s.workflow_namespace, s.node_name, s.driver) == ("fluxjob-1", "default", "rabbit-1", "local")
    # A flag still wins over the pod's variable.
    assert parse_settings(["-cert", "mine.pem"], env=env).cert == "mine.pem"


def test_reference_defaults():
    s = parse_settings([], env={})
    assert (s.host, s.port, s.cert, s.key, s.token_key) == ("localhost", 4000, "cert.pem", "key.pem", "token_key.pem")


@pytest.mark.parametrize("argv, text", [
    (["-addr", "nohost"], "HOST:PORT"),
    (["-addr", "h:http"], "port must be a number"),
    (["-addr", "h:70000"], "0..65535"),
    (["-mock", "--driver", "local"], "conflicts"),
    (["--workers", "0"], "positive"),
])
def test_bad_settings(argv, text):
    with pytest.raises(SettingsError, match=text):
        parse_settings(argv, env={})


def test_default_state_dir_is_one_per_set_of_roots(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}

    def state_dir(*roots):
        return parse_settings([arg for root in roots for arg in ("--allow-root", root)], env=env).state_dir

    first = state_dir(str(a))
    assert os.path.dirname(first) == str(tmp_path / "state" / "copy-offload")
    assert re.fullmatch(r"roots-[0-9a-f]{12}", os.path.basename(first))
    assert state_dir(str(b)) != first and state_dir(str(a), str(b)) not in (first, state_dir(str(b)))
    # The same roots in another order or spelling share their records (a restart finds them).
    assert state_dir(str(b), str(a) + "/") == state_dir(str(a), str(b)) == state_dir(str(a), str(b / ".." / "b"))
    assert parse_settings(["--allow-root", str(a), "--state-dir", "/x"], env=env).state_dir == "/x"


def test_allow_root_must_be_an_existing_directory(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SettingsError, match="does not exist"):
        parse_settings(["--allow-root", str(tmp_path), "--allow-root", str(tmp_path / "typo")], env={})
    with pytest.raises(SettingsError, match="is not a directory"):
        parse_settings(["--allow-root", str(afile)], env={})
    assert parse_settings(["--driver", "mock", "--allow-root", str(tmp_path / "typo")], env={}).driver == "mock"


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "copy_offload.server", "-addr", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=30, env=env)


def test_startup_errors_are_one_clear_line(material, tmp_path):
    r = _run("-cert", str(tmp_path / "absent.crt"), "-cakey", material.key, "-tokenkey", material.token_key, "-mock")
    assert r.returncode == 1 and "Error loading certificate and key file" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run("-skip-tls", "-tokenkey", str(tmp_path / "absent.key"), "-mock")
    assert r.returncode == 1 and "unable to read back the key file" in r.stderr
    nopem = tmp_path / "nopem.key"
    nopem.write_text("not a pem file\n")
    r = _run("-skip-tls", "-tokenkey", str(nopem), "-mock")
    assert r.returncode == 1 and "unable to decode PEM key for token" in r.stderr
    r = _run("-skip-tls", "-tokenkey", material.cert, "-mock")  # a certificate would be a public secret
    assert r.returncode == 1 and "holds a CERTIFICATE, not a private key" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    r = _run("-skip-tls", "-skip-token")
    assert r.returncode == 1 and "--allow-root" in r.stderr
    r = _run("-skip-tls", "-skip-token", "--allow-root", str(tmp_path / "typo"))
    assert r.returncode == 2 and r.stderr == "copy-offload-server: --allow-root %s does not exist; give existing directories\n" % (tmp_path / "typo")
    bad_profiles = tmp_path / "profiles.toml"
    bad_profiles.write_text("[profiles.x]\ncommand = 3\n")
    r = _run("-skip-tls", "-skip-token", "--allow-root", str(tmp_path), "--state-dir", str(tmp_path / "s"),
             "--profiles", str(bad_profiles))
    assert r.returncode == 1 and str(bad_profiles) in r.stderr and "Traceback" not in r.stderr
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    r = _run("-skip-tls", "-skip-token", "--allow-root", str(tmp_path), "--state-dir", str(blocker / "state"))
    assert r.returncode == 1 and "cannot use the state directory" in r.stderr and "Traceback" not in r.stderr
    r = _run("-skip-tls", "-skip-token", "--driver", "bogus")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    for text in (r.stderr,):
        assert "Traceback" not in text


def test_port_in_use(server_factory, material):
    server = server_factory("mock", tls=False, token=False)
    r = subprocess.run([sys.executable, "-m", "copy_offload.server", "-addr", "127.0.0.1:%d" % server.port,
                        "-skip-tls", "-skip-token", "-mock"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot listen on 127.0.0.1:%d" % server.port in r.stderr


def test_servers_with_other_roots_do_not_share_requests(server_factory, tmp_path):
    """The default state directory, end to end: a server with other roots does not know another's
    requests, and a restart with the same roots (in another spelling) finds them again."""
    from copy_offload.client import Client, NotFound

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "src").mkdir(parents=True)
    (a / "src" / "f.txt").write_text("data\n")
    b.mkdir()
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}

    @contextlib.contextmanager
    def client_of(root: str):
        """A client of a fresh server on ``root``, stopped after use (as a restart would)."""
        server = server_factory("local", extra=["--allow-root", root], env=env)
        try:
            with Client(**server.client_kwargs()) as client:
                yield client
        finally:
            server.stop()

    with client_of(str(a)) as client:
        name = client.copy(str(a / "src"), str(a / "dst"))
        assert client.wait(name).status == "success"
    with client_of(str(b)) as client, pytest.raises(NotFound):
        client.status(name)
    with client_of(str(a) + "/") as client:
        assert client.status(name).status == "success"
    assert sorted(os.listdir(tmp_path / "state" / "copy-offload")) == sorted(
        os.path.basename(default_state_dir(env, [root])) for root in (str(a), str(b)))
