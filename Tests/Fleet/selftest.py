#!/usr/bin/python3
"""Shows that the test fleet behaves like NixOS builders where bkfleet can observe it.

Run as root against an up fleet (`Tests/Fleet/fleet up 3`): `python3 Tests/Fleet/selftest.py`.
It talks to one host (FLEET_SELFTEST_HOST, default builder-03) the way bkfleet does: ssh with
the fleet's key and known_hosts, then the Buildkite stand-in's REST API. It does not test
bkfleet, and it never prints a token's value (only sha256: fingerprints).
"""

import hashlib
import json
import os
import shlex
import ssl
import subprocess
import sys
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLIENT = os.path.join(REPO, ".fleet")
FIXTURES = os.path.join(HERE, "fixtures")
HOST = os.environ.get("FLEET_SELFTEST_HOST", "builder-03")
UNIT = "buildkite-agent-builder"
SECRETS = "/var/lib/bkfleet/secrets/builder"
API = "https://10.250.0.1"
# Registration takes about a second; the deadline only bounds a broken run.
REGISTER_DEADLINE = 60


def client_file(name):
    path = os.path.join(CLIENT, name)
    if not os.path.exists(path):
        sys.exit(f"selftest: {path} is missing; start the fleet first: Tests/Fleet/fleet up 3")
    return path


def fingerprint(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()[:12]


def host_address(name):
    with open(client_file("hosts.json")) as f:
        for host in json.load(f):
            if host["name"] == name:
                return host["address"]
    sys.exit(f"selftest: host {name} is not in .fleet/hosts.json; run: Tests/Fleet/fleet up 3")


def ssh(command, stdin=b"", user="root"):
    """Runs a shell command on HOST over ssh; returns (exit status, stdout, stderr)."""
    argv = ["ssh", "-i", client_file("id_ed25519"),
            "-o", "UserKnownHostsFile=" + client_file("known_hosts"),
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", f"{user}@{host_address(HOST)}", command]
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=300)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def ssh_ok(command, stdin=b""):
    status, out, err = ssh(command, stdin)
    if status != 0:
        raise AssertionError(f"{HOST}: `{command}` exited {status}: {err.strip()}")
    return out


def api(method, path, body=None):
    context = ssl.create_default_context(cafile=client_file("ca.pem"))
    with open(client_file("api-token")) as f:
        bearer = f.read().strip()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(API + path, data=data, method=method, headers={
        "Authorization": "Bearer " + bearer, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


def write_modules(*fixtures):
    """Puts fixture modules into /etc/nixos/bkfleet/ with a default.nix importing the first."""
    ssh_ok("rm -rf /etc/nixos/bkfleet && install -d -m 0755 /etc/nixos/bkfleet")
    for name in fixtures:
        with open(os.path.join(FIXTURES, name), "rb") as f:
            ssh_ok(f"cat > /etc/nixos/bkfleet/{name}", f.read())
    top = f"[ ./{fixtures[0]} ]" if fixtures else "[ ]"
    ssh_ok("cat > /etc/nixos/bkfleet/default.nix",
           ("{ imports = " + top + "; }\n").encode())


def write_secrets(token):
    """Token and SSH key as bkfleet leaves them: root:keys 0440, values sent on stdin."""
    ssh_ok(f"install -d -m 0750 -g keys {SECRETS}")
    ssh_ok(f"umask 077; cat > {SECRETS}/token && chgrp keys {SECRETS}/token && "
           f"chmod 0440 {SECRETS}/token", token)
    ssh_ok(f"rm -f {SECRETS}/ssh_key && ssh-keygen -q -t ed25519 -N '' -f {SECRETS}/ssh_key "
           f"&& rm {SECRETS}/ssh_key.pub && chgrp keys {SECRETS}/ssh_key && "
           f"chmod 0440 {SECRETS}/ssh_key")


def switch(*args):
    return ssh("nixos-rebuild switch " + " ".join(shlex.quote(a) for a in args))


def unit_properties():
    out = ssh_ok(f"systemctl show {UNIT} -p ActiveState -p RootDirectory "
                 "-p BindReadOnlyPaths -p BindPaths")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(since):
    """The unit's log since `since` (seconds since the epoch on the host)."""
    return ssh_ok(f"journalctl -u {UNIT} --since @{since} --no-pager -o cat")


def events_on_host(kind, first):
    """Events of one kind from HOST numbered `first` or later."""
    events = api("GET", f"/_test/events?since={first - 1}&type={kind}")["events"]
    return [e for e in events if e.get("hostname") == HOST and e["seq"] >= first]


def agents_on_host(first):
    return events_on_host("register", first)


def next_event_seq():
    """The number the stand-in gives its next event (none of this type exists)."""
    return api("GET", "/_test/events?since=0&type=none")["next_seq"]


def wait_for(predicate):
    deadline = time.monotonic() + REGISTER_DEADLINE
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    return predicate()


class FleetHostBehavesLikeNixOS(unittest.TestCase):
    """Each test starts from a host with no agent (an empty bkfleet module set)."""

    @classmethod
    def setUpClass(cls):
        with open(client_file("tokens/default.token"), "rb") as f:
            cls.token = f.read()

    def setUp(self):
        write_modules()
        status, _, err = switch()
        self.assertEqual(status, 0, f"resetting {HOST} to no agents failed: {err}")
        ssh_ok(f"rm -rf {SECRETS} /var/lib/{UNIT}")
        self.started = int(ssh_ok("date +%s"))

    def test_reference_module_with_name_resolution_binds_gives_confined_registered_agent(self):
        write_secrets(self.token)
        write_modules("registering-module.nix", "reference-module.nix")
        since = next_event_seq()

        status, _, err = switch()

        self.assertEqual(status, 0, err)
        props = unit_properties()
        self.assertEqual(props["ActiveState"], "active")
        self.assertEqual(props["RootDirectory"], f"/run/confinement/{UNIT}")
        for path in (f"{SECRETS}/token", f"{SECRETS}/ssh_key", "/etc/machine-id",
                     "/etc/hosts", "/etc/ssl/certs/ca-certificates.crt"):
            self.assertIn(path, props["BindReadOnlyPaths"])
        self.assertIn(f"/var/lib/{UNIT}", props["BindPaths"])
        registered = wait_for(lambda: agents_on_host(since))
        self.assertTrue(registered,
                        f"no agent of {HOST} registered; journal:\n{journal(self.started)}")
        self.assertEqual(registered[0]["token_fingerprint"], fingerprint(self.token))
        self.assertIn("queue=nix", registered[0]["meta_data"])
        listed = api("GET", "/v2/organizations/demo/agents?per_page=100")
        self.assertIn(registered[0]["agent_name"], [a["name"] for a in listed])

    def test_misspelled_option_fails_switch_with_nixos_message(self):
        write_modules("misspelled-module.nix")

        status, _, err = switch()

        self.assertEqual(status, 1)
        self.assertIn("error: The option `services.buildkite-agents.builder.tokenPth' "
                      "does not exist.", err)
        self.assertIn("/etc/nixos/bkfleet/misspelled-module.nix", err)

    def test_missing_token_file_fails_the_unit(self):
        write_secrets(self.token)
        ssh_ok(f"rm {SECRETS}/token")
        write_modules("registering-module.nix", "reference-module.nix")

        status, _, err = switch()

        self.assertNotEqual(status, 0)
        self.assertIn(UNIT, err)
        self.assertNotEqual(unit_properties()["ActiveState"], "active")
        self.assertIn("226/NAMESPACE", ssh_ok(f"systemctl status {UNIT} --no-pager || true"))

    def test_confinement_without_name_resolution_binds_fails_registration(self):
        write_secrets(self.token)
        write_modules("reference-module.nix")
        since = next_event_seq()

        status, _, err = switch()

        self.assertNotEqual(status, 0, "the reference module alone must not register here")
        self.assertIn("Could not register with Buildkite", journal(self.started))
        self.assertEqual(agents_on_host(since), [])

    def test_rollback_restores_previous_units(self):
        write_secrets(self.token)
        write_modules("registering-module.nix", "reference-module.nix")
        self.assertEqual(switch()[0], 0)
        write_modules()
        self.assertEqual(switch()[0], 0)
        self.assertNotEqual(unit_properties()["ActiveState"], "active")
        since = next_event_seq()

        status, _, err = switch("--rollback")

        self.assertEqual(status, 0, err)
        self.assertEqual(unit_properties()["ActiveState"], "active")
        self.assertTrue(wait_for(lambda: agents_on_host(since)),
                        f"the restored agent did not register; journal:\n{journal(self.started)}")

    def test_revoked_token_is_refused(self):
        created = api("POST", "/v2/organizations/demo/clusters/default/tokens",
                      {"description": "fleet selftest: revoked before use"})
        api("DELETE", f"/v2/organizations/demo/clusters/default/tokens/{created['id']}")
        write_secrets(created["token"].encode())
        write_modules("registering-module.nix", "reference-module.nix")
        since = next_event_seq()

        status, _, _ = switch()

        self.assertNotEqual(status, 0)
        self.assertIn("Buildkite rejected the registration", journal(self.started))
        self.assertEqual(agents_on_host(since), [])
        rejected = events_on_host("register_rejected", since)
        self.assertIn("revoked token", [e["reason"] for e in rejected])


if __name__ == "__main__":
    unittest.main(verbosity=2)
