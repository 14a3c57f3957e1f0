"""Tests of the NixOS stand-in that need no fleet: they evaluate configurations with the
real nix-instantiate (--store dummy://, no daemon) and run nixos-rebuild against a
temporary root with --no-systemd. They do not start units or create users; the fleet's
own tests cover that. Run: python3 -m unittest Tests/Fleet/standins/nixos/test_eval.py
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
EVAL_NIX = os.path.join(HERE, "nix", "eval.nix")
REBUILD = os.path.join(HERE, "nixos-rebuild")
INSTALL = os.path.join(HERE, "install.sh")
TESTDATA = os.path.join(HERE, "testdata")

CONFIGURATION = """\
{ config, pkgs, ... }: {
  imports = [ ./hardware-configuration.nix ./bkfleet ];
  networking.hostName = "builder-01";
  system.stateVersion = "24.05";
}
"""


def read(path):
    with open(path) as f:
        return f.read()


def strip_header(text):
    """Drops the leading comment lines the project adds to copied reference files."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


class ConfigDir:
    """An /etc/nixos-like directory: configuration.nix importing ./bkfleet's modules."""

    def __init__(self, modules):
        self.dir = tempfile.mkdtemp(prefix="nixos-standin-test-")
        os.makedirs(os.path.join(self.dir, "bkfleet"))
        self.write("configuration.nix", CONFIGURATION)
        self.write("hardware-configuration.nix", "{ boot.isContainer = true; }\n")
        names = []
        for name, text in modules.items():
            self.write(f"bkfleet/{name}", text)
            names.append(f"./{name}")
        self.write("bkfleet/default.nix", "{ imports = [ %s ]; }\n" % " ".join(names))

    def write(self, rel, text):
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(text)

    def path(self, rel):
        return os.path.join(self.dir, rel)

    def cleanup(self):
        shutil.rmtree(self.dir)


def evaluate(modules):
    """Evaluates; returns (exit status, parsed JSON or None, stderr, config dir path)."""
    config = ConfigDir(modules)
    try:
        result = subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", "--store", "dummy://",
             EVAL_NIX, "--argstr", "configPath", config.path("configuration.nix")],
            capture_output=True, text=True, env=dict(os.environ, NIX_REMOTE="dummy://"))
        data = json.loads(result.stdout) if result.returncode == 0 else None
        return result.returncode, data, result.stderr, config.dir
    finally:
        config.cleanup()


def reference_module():
    return strip_header(read(os.path.join(TESTDATA, "reference-module.nix")))


def directives(unit_text):
    """(section, key, value) for every directive line of a unit file."""
    section, found = None, []
    for line in unit_text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("["):
            section = line
        else:
            key, value = line.split("=", 1)
            found.append((section, key, value))
    return found


@unittest.skipUnless(shutil.which("nix-instantiate"), "nix-instantiate (nix-bin) missing")
class EvaluationTests(unittest.TestCase):

    def test_reference_module_renders_every_directive_of_the_nixos_unit(self):
        status, data, err, _ = evaluate({"builder.nix": reference_module()})
        self.assertEqual(status, 0, err)
        ours = directives(data["units"]["buildkite-agent-builder.service"]["text"])
        reference = directives(strip_header(read(os.path.join(TESTDATA,
                                                              "reference-unit.service"))))
        store = re.compile(r"/nix/store/[^/ :\"]+")
        # Store hashes differ (the reference's are shortened); compare with them masked,
        # and the agent package by directive only (the stand-in replaces the agent).
        masked = {(s, k, store.sub("/nix/store/X", v)) for s, k, v in ours}
        for section, key, value in reference:
            if key in ("ExecStart", "ExecStartPre") or key == "Environment" and \
                    value.startswith('"PATH='):
                self.assertIn(key, {k for s, k, _ in ours if s == section})
                continue
            self.assertIn((section, key, store.sub("/nix/store/X", value)), masked,
                          f"{key}={value} missing from the rendered unit")

    def test_confined_agent_gets_debian_runtime_binds_in_a_drop_in(self):
        status, data, err, _ = evaluate({"builder.nix": reference_module()})
        self.assertEqual(status, 0, err)
        drop_in = data["units"]["buildkite-agent-builder.service"]["dropIns"]
        binds = [v for s, k, v in directives(drop_in["confinement.conf"])
                 if k == "BindReadOnlyPaths"]
        for path in ("/usr", "/bin", "/lib", "-/lib64"):
            self.assertIn(path, binds)
        pre_start = [v for v in binds if v.endswith("-buildkite-agent-builder-pre-start")]
        self.assertEqual(len(pre_start), 1, binds)

    def test_pre_start_writes_config_from_token_path_and_copies_key(self):
        status, data, err, _ = evaluate({"builder.nix": reference_module()})
        self.assertEqual(status, 0, err)
        scripts = [spec["files"] for path, spec in data["store"].items()
                   if path.endswith("-unit-script-buildkite-agent-builder-pre-start")]
        self.assertEqual(len(scripts), 1)
        text = scripts[0]["bin/buildkite-agent-builder-pre-start"]["text"]
        self.assertIn('install -m600 "/var/lib/bkfleet/secrets/builder/ssh_key" '
                      '"/var/lib/buildkite-agent-builder/.ssh/id_rsa"', text)
        self.assertIn('token="$(cat /var/lib/bkfleet/secrets/builder/token)"', text)
        self.assertIn('tags="queue=nix"', text)
        self.assertIn('name="%hostname-builder-%n"', text)
        self.assertIn('build-path="/var/lib/buildkite-agent-builder/builds"', text)

    def test_agent_user_is_a_system_user_in_keys_with_data_dir_home(self):
        status, data, err, _ = evaluate({"builder.nix": reference_module()})
        self.assertEqual(status, 0, err)
        user = data["users"]["buildkite-agent-builder"]
        self.assertTrue(user["isSystemUser"])
        self.assertEqual(user["group"], "buildkite-agent-builder")
        self.assertEqual(user["extraGroups"], ["keys"])
        self.assertEqual(user["home"], "/var/lib/buildkite-agent-builder")
        self.assertIn("buildkite-agent-builder", data["groups"])
        self.assertIn("keys", data["groups"])

    def test_agent_package_is_the_pinned_stand_in_path(self):
        status, data, err, _ = evaluate({"builder.nix": reference_module()})
        self.assertEqual(status, 0, err)
        self.assertIn("ExecStart=/nix/store/00000000000000000000000000000bk1-buildkite-"
                      "agent-standin/bin/buildkite-agent start --config /var/lib/"
                      "buildkite-agent-builder/buildkite-agent.cfg",
                      data["units"]["buildkite-agent-builder.service"]["text"])

    def test_misspelled_agent_option_fails_with_nixos_message_and_position(self):
        module = reference_module().replace("tokenPath =", "tokenPth =")
        status, _, err, config_dir = evaluate({"builder.nix": module})
        self.assertEqual(status, 1)
        self.assertIn("error: The option `services.buildkite-agents.builder.tokenPth' "
                      "does not exist.", err)
        self.assertIn(f"In `{config_dir}/bkfleet/builder.nix'", err)
        self.assertIn(f"at {config_dir}/bkfleet/builder.nix:4:5:", err)

    def test_string_tags_fail_with_nixos_type_message(self):
        module = reference_module().replace('tags = { queue = "nix"; };',
                                            'tags = "queue=nix";')
        status, _, err, _ = evaluate({"builder.nix": module})
        self.assertEqual(status, 1)
        self.assertIn("error: A definition for option `services.buildkite-agents.builder."
                      "tags' is not of type `attribute set of (string or list of string)'.",
                      err)

    def test_unknown_top_level_option_fails(self):
        status, _, err, _ = evaluate({"x.nix": '{ networking.hostNme = "x"; }'})
        self.assertEqual(status, 1)
        self.assertIn("The option `networking.hostNme' does not exist.", err)

    def test_misspelled_systemd_directive_is_accepted_as_in_nixos(self):
        module = reference_module().replace("BindReadOnlyPaths =", "BindReadOnlyPath =")
        status, data, err, _ = evaluate({"builder.nix": module})
        self.assertEqual(status, 0, err)
        self.assertIn("BindReadOnlyPath=/etc/machine-id",
                      data["units"]["buildkite-agent-builder.service"]["text"])

    def test_unknown_package_fails_like_nix(self):
        status, _, err, _ = evaluate({"x.nix": "{ pkgs, ... }: "
                                      "{ environment.systemPackages = [ pkgs.gti ]; }"})
        self.assertEqual(status, 1)
        self.assertIn("error: attribute 'gti' missing", err)

    def test_missing_token_path_is_reported(self):
        status, _, err, _ = evaluate({"a.nix": "{ services.buildkite-agents.a = { }; }"})
        self.assertEqual(status, 1)
        self.assertIn("The option `services.buildkite-agents.a.tokenPath' was accessed "
                      "but has no value defined.", err)

    def test_quotes_backslashes_interpolation_and_newlines_survive(self):
        module = textwrap.dedent(r'''
            { lib, ... }: {
              services.buildkite-agents.esc = {
                tokenPath = "/run/keys/esc token";
                tags.weird = "a\"b\\c\${x}d";
                tags.multi = [ "x" "y" ];
                extraConfig = "endpoint=\"https://agent.buildkite.test/v3\"\nx=\${HOME}";
              };
            }''')
        status, data, err, _ = evaluate({"esc.nix": module})
        self.assertEqual(status, 0, err)
        agent = data["config"]["services"]["buildkite-agents"]["esc"]
        self.assertEqual(agent["tags"]["weird"], 'a"b\\c${x}d')
        self.assertEqual(agent["tags"]["multi"], ["x", "y"])
        self.assertEqual(agent["extraConfig"],
                         'endpoint="https://agent.buildkite.test/v3"\nx=${HOME}')
        self.assertEqual(agent["tokenPath"], "/run/keys/esc token")

    def test_definitions_from_several_modules_merge(self):
        status, data, err, _ = evaluate({
            "builder.nix": reference_module(),
            "more.nix": textwrap.dedent('''
                { lib, ... }: {
                  services.buildkite-agents.builder.extraConfig = "debug=true";
                  services.buildkite-agents.builder.tags.os = "linux";
                  systemd.services.buildkite-agent-builder.serviceConfig = {
                    BindReadOnlyPaths = [ "/etc/hosts" ];
                    Restart = lib.mkForce "always";
                  };
                }'''),
        })
        self.assertEqual(status, 0, err)
        agent = data["config"]["services"]["buildkite-agents"]["builder"]
        self.assertEqual(agent["tags"], {"queue": "nix", "os": "linux"})
        self.assertEqual(agent["extraConfig"], "debug=true")
        text = data["units"]["buildkite-agent-builder.service"]["text"]
        self.assertIn("BindReadOnlyPaths=/etc/hosts\n", text)
        self.assertIn("BindReadOnlyPaths=/etc/machine-id\n", text)
        self.assertIn("Restart=always\n", text)

    def test_lines_from_two_modules_join_with_newline(self):
        status, data, err, _ = evaluate({
            "a.nix": '{ services.buildkite-agents.a = { tokenPath = "/t"; '
                     'extraConfig = "one=1"; }; }',
            "b.nix": '{ services.buildkite-agents.a.extraConfig = "two=2"; }',
        })
        self.assertEqual(status, 0, err)
        self.assertEqual(data["config"]["services"]["buildkite-agents"]["a"]["extraConfig"],
                         "one=1\ntwo=2")

    def test_conflicting_scalars_fail_naming_both_files(self):
        status, _, err, _ = evaluate({"x.nix": '{ networking.hostName = "other"; }'})
        self.assertEqual(status, 1)
        self.assertIn("The option `networking.hostName' has conflicting definition values:",
                      err)
        self.assertIn("configuration.nix': \"builder-01\"", err)
        self.assertIn("x.nix': \"other\"", err)

    def test_disabled_agent_has_no_unit_and_no_user(self):
        status, data, err, _ = evaluate({
            "a.nix": '{ services.buildkite-agents.off = { enable = false; }; }'})
        self.assertEqual(status, 0, err)
        self.assertNotIn("buildkite-agent-off.service", data["units"])
        self.assertNotIn("buildkite-agent-off", data["users"])


@unittest.skipUnless(shutil.which("nix-instantiate"), "nix-instantiate (nix-bin) missing")
class RebuildTests(unittest.TestCase):
    """nixos-rebuild against a temporary root, with systemd and user tools skipped."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="nixos-standin-root-")
        os.makedirs(os.path.join(self.root, "etc"))
        subprocess.run([INSTALL, self.root, "--hostname", "builder-01"], check=True,
                       capture_output=True)
        os.makedirs(self.p("/etc/nixos/bkfleet"))
        self.set_modules({"builder.nix": reference_module()})

    def tearDown(self):
        shutil.rmtree(self.root)

    def p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def set_modules(self, modules):
        with open(self.p("/etc/nixos/bkfleet/default.nix"), "w") as f:
            f.write("{ imports = [ %s ]; }\n" % " ".join(f"./{n}" for n in modules))
        for name, text in modules.items():
            with open(self.p(f"/etc/nixos/bkfleet/{name}"), "w") as f:
                f.write(text)

    def rebuild(self, *args):
        result = subprocess.run(
            [self.p("/usr/local/sbin/nixos-rebuild"), "--root", self.root, "--no-systemd",
             *args], capture_output=True, text=True)
        return result.returncode, result.stderr

    def unit(self):
        path = self.p("/etc/systemd/system/buildkite-agent-builder.service")
        return read(path) if os.path.exists(path) else None

    def test_switch_writes_unit_generation_and_current_system(self):
        status, err = self.rebuild("switch")
        self.assertEqual(status, 0, err)
        self.assertIn("building the system configuration...", err)
        self.assertIn("the following new units were started: "
                      "buildkite-agent-builder.service", err)
        self.assertIn("User=buildkite-agent-builder", self.unit())
        self.assertTrue(os.path.exists(self.p(
            "/etc/systemd/system/buildkite-agent-builder.service.d/confinement.conf")))
        self.assertTrue(os.path.islink(self.p(
            "/etc/systemd/system/multi-user.target.wants/buildkite-agent-builder.service")))
        self.assertEqual(os.readlink(self.p("/nix/var/nix/profiles/system")), "system-1-link")
        current = os.readlink(self.p("/run/current-system"))
        self.assertEqual(current, os.readlink(self.p("/nix/var/nix/profiles/system-1-link")))
        self.assertTrue(os.path.isfile(self.p(current + "/config.json")))
        self.assertTrue(os.path.isdir(self.p("/var/lib/buildkite-agent-builder")))

    def test_pre_start_script_is_created_executable_in_the_store(self):
        status, err = self.rebuild("switch")
        self.assertEqual(status, 0, err)
        line = [l for l in self.unit().splitlines() if l.startswith("ExecStartPre=")][0]
        script = self.p(line.split("=", 1)[1])
        self.assertTrue(os.access(script, os.X_OK))
        self.assertIn("cat > \"/var/lib/buildkite-agent-builder/buildkite-agent.cfg\"",
                      read(script))

    def test_changed_unit_is_stopped_and_started_unchanged_one_is_not(self):
        self.rebuild("switch")
        status, err = self.rebuild("switch")
        self.assertEqual(status, 0, err)
        self.assertNotIn("stopping the following units", err)
        self.set_modules({"builder.nix": reference_module().replace('"nix"', '"nix2"')})
        status, err = self.rebuild("switch")
        self.assertEqual(status, 0, err)
        self.assertIn("stopping the following units: buildkite-agent-builder.service", err)
        self.assertIn("starting the following units: buildkite-agent-builder.service", err)
        self.assertEqual(os.readlink(self.p("/nix/var/nix/profiles/system")), "system-2-link")

    def test_rollback_restores_previous_units_and_removes_added_ones(self):
        self.rebuild("switch")
        first = self.unit()
        self.set_modules({"builder.nix": reference_module().replace('"nix"', '"nix2"'),
                          "second.nix": '{ services.buildkite-agents.second.tokenPath = '
                                        '"/var/lib/bkfleet/secrets/second/token"; }'})
        self.rebuild("switch")
        self.assertNotEqual(self.unit(), first)
        second_unit = self.p("/etc/systemd/system/buildkite-agent-second.service")
        self.assertTrue(os.path.exists(second_unit))
        status, err = self.rebuild("switch", "--rollback")
        self.assertEqual(status, 0, err)
        self.assertIn("switching profile from version 2 to 1", err)
        self.assertIn("stopping the following units: buildkite-agent-builder.service, "
                      "buildkite-agent-second.service", err)
        self.assertEqual(self.unit(), first)
        self.assertFalse(os.path.exists(second_unit))
        status, err = self.rebuild("switch", "--rollback")
        self.assertEqual(status, 1)
        self.assertIn("error: no generation older than the current (1) exists", err)

    def test_eval_error_exits_1_and_changes_nothing(self):
        self.rebuild("switch")
        before = self.unit()
        self.set_modules({"builder.nix": reference_module().replace("tokenPath", "tokenPth")})
        status, err = self.rebuild("switch")
        self.assertEqual(status, 1)
        self.assertIn("The option `services.buildkite-agents.builder.tokenPth' does not "
                      "exist.", err)
        self.assertEqual(self.unit(), before)
        self.assertFalse(os.path.lexists(self.p("/nix/var/nix/profiles/system-2-link")))

    def test_fail_switch_knob_fails_the_build_with_its_message(self):
        with open(self.p("/etc/nixos-standin/fail-switch"), "w") as f:
            f.write("disk quota exceeded\n")
        status, err = self.rebuild("switch")
        self.assertEqual(status, 100)
        self.assertIn("failed with exit code 1;", err)
        self.assertIn("> disk quota exceeded", err)
        self.assertIsNone(self.unit())

    def test_other_config_is_evaluated_with_I_without_touching_the_host(self):
        staged = tempfile.mkdtemp(prefix="nixos-standin-staged-")
        try:
            with open(os.path.join(staged, "configuration.nix"), "w") as f:
                f.write('{ services.buildkite-agents.x.tokenPth = "/t"; }\n')
            status, err = self.rebuild("dry-build", "-I",
                                       f"nixos-config={staged}/configuration.nix")
            self.assertEqual(status, 1)
            self.assertIn("`services.buildkite-agents.x.tokenPth' does not exist", err)
            self.assertIsNone(self.unit())
        finally:
            shutil.rmtree(staged)

    def test_no_import_install_leaves_bkfleet_out(self):
        subprocess.run([INSTALL, self.root, "--no-import"], check=True, capture_output=True)
        status, err = self.rebuild("switch")
        self.assertEqual(status, 0, err)
        self.assertIsNone(self.unit())
        self.assertNotIn("./bkfleet", read(self.p("/etc/nixos/configuration.nix")))


if __name__ == "__main__":
    unittest.main()
