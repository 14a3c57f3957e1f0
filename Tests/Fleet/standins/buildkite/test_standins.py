#!/usr/bin/python3
"""Tests of the Buildkite stand-ins without the fleet: server.py on 127.0.0.1 (random port,
temporary state) and the stand-in agent against it, trusting a temporary test CA.
They do not cover name resolution or confinement inside hosts; fleet tests do that.
Run: python3 -m unittest -v test_standins   (from this directory)
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "agent", "buildkite-agent")
WAIT = 30.0  # Upper bound for a condition to become true; never an asserted duration.


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, what, limit=WAIT):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("gave up waiting for: %s" % what)


class StandinCase(unittest.TestCase):
    """One server per test class; agents get unique names per test."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="bk-standin-test-")
        subprocess.run(["bash", os.path.join(HERE, "setup.sh"), cls.dir], check=True,
                       stdout=subprocess.DEVNULL)
        cls.port = free_port()
        cls.ca = os.path.join(cls.dir, "ca.pem")
        cls.api_token = cls.read(cls, "api-token")
        cls.default_token = cls.read(cls, "tokens/default.token")
        cls.server = None
        cls.start_server()

    @classmethod
    def start_server(cls):
        cls.server_log = open(os.path.join(cls.dir, "server.log"), "a")
        cls.server = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), "--listen", "127.0.0.1",
             "--port", str(cls.port), "--state-dir", cls.dir, "--ping-interval", "1",
             "--heartbeat-interval", "1", "--lost-after", "4"],
            stdout=cls.server_log, stderr=subprocess.STDOUT)
        wait_until(lambda: cls.try_health(), "stand-in server to answer /_test/health")

    @classmethod
    def stop_server(cls):
        cls.server.terminate()
        cls.server.wait()
        cls.server_log.close()

    @classmethod
    def try_health(cls):
        try:
            return cls.call(cls, "GET", "/_test/health")[0] == 200
        except OSError:
            return False

    @classmethod
    def tearDownClass(cls):
        cls.stop_server()
        if not os.environ.get("KEEP_STANDIN_TEST_DIR"):
            shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.agents = []

    def tearDown(self):
        for process, _ in self.agents:
            if process.poll() is None:
                process.kill()
                process.wait()

    # -- helpers ------------------------------------------------------------------------

    def read(self, name):
        with open(os.path.join(self.dir, name)) as handle:
            return handle.read().strip()

    def call(self, method, path, body=None, bearer=None, raw_headers=None):
        context = ssl.create_default_context(cafile=self.ca)
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                                 context=context)
        headers = dict(raw_headers or {})
        if bearer:
            headers["Authorization"] = "Bearer " + bearer
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        data = json.loads(raw) if raw.strip() else None
        return response.status, data, response

    def rest(self, method, path, body=None):
        return self.call(method, "/v2/organizations/demo" + path, body, bearer=self.api_token)

    def graphql(self, query, variables=None, path="/v1"):
        status, data, _ = self.call("POST", path, {"query": query, "variables": variables},
                                    bearer=self.api_token)
        self.assertEqual(status, 200, data)
        return data

    def start_agent(self, name, token, tags="queue=nix,os=linux", ca=None, endpoint=None):
        config = os.path.join(self.dir, "%s.cfg" % name)
        with open(config, "w") as handle:
            handle.write('token="%s"\nname="%s"\nshell="/bin/sh -e -c"\ntags="%s"\n'
                         'build-path="/var/lib/x/builds"\nhooks-path="/etc/x/hooks"\n'
                         'endpoint=%s\n' % (token, name, tags,
                                            endpoint or "https://127.0.0.1:%d/v3" % self.port))
        log_path = os.path.join(self.dir, "%s.log" % name)
        env = dict(os.environ, BUILDKITE_STANDIN_CA_BUNDLE=ca or self.ca)
        with open(log_path, "w") as output:
            process = subprocess.Popen([AGENT, "start", "--config", config], env=env,
                                       stdout=output, stderr=subprocess.STDOUT)
        self.agents.append((process, log_path))
        return process, log_path

    def log_of(self, log_path):
        with open(log_path) as handle:
            return handle.read()

    def wait_for_line(self, log_path, text):
        wait_until(lambda: text in self.log_of(log_path), "%r in %s" % (text, log_path))

    def listed(self, name, **extra):
        query = "&".join(["name=" + name] + ["%s=%s" % kv for kv in extra.items()])
        status, agents, _ = self.rest("GET", "/agents?" + query)
        self.assertEqual(status, 200)
        return agents

    def events(self, **query):
        path = "/_test/events?" + "&".join("%s=%s" % kv for kv in query.items())
        return self.call("GET", path)[1]["events"]

    def create_token(self, description):
        status, body, _ = self.rest("POST", "/clusters/default/tokens",
                                    {"description": description})
        self.assertEqual(status, 201, body)
        return body

    def register_directly(self, name, hostname):
        context = ssl.create_default_context(cafile=self.ca)
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context)
        connection.request("POST", "/v3/register",
                           json.dumps({"name": name, "hostname": hostname,
                                       "meta_data": ["queue=pager"]}),
                           {"Authorization": "Token " + self.default_token})
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        self.assertEqual(response.status, 200)
        return body


class AgentRegistrationTests(StandinCase):

    def test_registered_agent_is_listed_connected_with_its_tags(self):
        _, log_path = self.start_agent("reg-ok", self.default_token)
        self.wait_for_line(log_path, 'Successfully registered agent "reg-ok" with tags '
                                     '[queue=nix, os=linux]')
        agents = wait_until(lambda: [a for a in self.listed("reg-ok")
                                     if a["connection_state"] == "connected"],
                            "reg-ok connected")
        self.assertEqual(len(agents), 1)
        agent = agents[0]
        self.assertEqual(agent["meta_data"], ["queue=nix", "os=linux"])
        self.assertEqual(agent["hostname"], socket.gethostname())
        self.assertRegex(agent["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        log = self.log_of(log_path)
        self.assertRegex(log.splitlines()[1], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO   "
                                              r"Registering agent with Buildkite\.\.\.$")
        self.assertNotIn(self.default_token, log)

    def test_name_placeholders_expand_like_the_real_agent(self):
        _, log_path = self.start_agent("%hostname-ph-%n", self.default_token, tags="")
        self.wait_for_line(log_path, 'Successfully registered agent "%s-ph-1" with tags []'
                           % socket.gethostname())

    def test_unknown_token_gets_the_rejection_line_and_exit_1(self):
        wrong = "bkct_" + "0" * 40
        process, log_path = self.start_agent("reg-bad", wrong)
        self.assertEqual(process.wait(timeout=WAIT), 1)
        self.assertIn("Buildkite rejected the registration (POST https://127.0.0.1:%d/v3/"
                      "register: 401 Unauthorized)" % self.port, self.log_of(log_path))
        rejected = self.events(type="register_rejected", agent="reg-bad")
        self.assertEqual(rejected[-1]["reason"], "unknown token")
        self.assertTrue(rejected[-1]["token_fingerprint"].startswith("sha256:"))
        everything = json.dumps(self.call("GET", "/_test/events")[1])
        with open(os.path.join(self.dir, "state.json")) as handle:
            everything += handle.read()
        with open(os.path.join(self.dir, "server.log")) as handle:
            everything += handle.read()
        for value in (wrong, self.default_token, self.api_token):
            self.assertNotIn(value, everything)

    def test_agent_without_its_ca_bundle_cannot_register(self):
        process, log_path = self.start_agent("no-ca", self.default_token,
                                             ca=os.path.join(self.dir, "missing.pem"))
        self.assertEqual(process.wait(timeout=WAIT), 1)
        self.assertIn("ERROR  Cannot read the CA bundle", self.log_of(log_path))

    def test_agent_trusting_another_ca_fails_tls(self):
        process, log_path = self.start_agent("wrong-ca", self.default_token,
                                             ca="/etc/ssl/certs/ca-certificates.crt")
        self.assertEqual(process.wait(timeout=WAIT), 1)
        self.assertRegex(self.log_of(log_path),
                         r"ERROR  Could not register with Buildkite: POST https://127\.0\.0\.1:"
                         r"\d+/v3/register: tls: .*certificate")
        self.assertEqual(self.listed("wrong-ca", include_disconnected="true"), [])

    def test_agent_refuses_addresses_outside_the_test_networks(self):
        process, log_path = self.start_agent("far", self.default_token,
                                             endpoint="https://192.0.2.1/v3")
        self.assertEqual(process.wait(timeout=WAIT), 1)
        self.assertIn("refusing to connect to 192.0.2.1", self.log_of(log_path))


class TokenTests(StandinCase):

    def test_revoked_token_refuses_new_agents_but_keeps_connected_ones(self):
        created = self.create_token("rotation test")
        _, first_log = self.start_agent("rev-a", created["token"])
        self.wait_for_line(first_log, "rev-a Waiting for instructions...")
        status, _, _ = self.rest("DELETE", "/clusters/default/tokens/" + created["id"])
        self.assertEqual(status, 204)

        process, second_log = self.start_agent("rev-b", created["token"])
        self.assertEqual(process.wait(timeout=WAIT), 1)
        self.assertIn("Buildkite rejected the registration", self.log_of(second_log))
        rejected = self.events(type="register_rejected", agent="rev-b")[-1]
        self.assertEqual((rejected["reason"], rejected["token_id"]),
                         ("revoked token", created["id"]))

        # The agent that registered before the revocation keeps working: it takes a job.
        self.assertEqual(self.listed("rev-a")[0]["connection_state"], "connected")
        self.call("POST", "/_test/jobs", {"agent": "rev-a", "seconds": 0})
        self.wait_for_line(first_log, "rev-a Finished job")
        self.assertEqual(self.listed("rev-a")[0]["connection_state"], "connected")

    def test_token_value_is_returned_only_on_create(self):
        created = self.create_token("shown once")
        self.assertTrue(created["token"].startswith("bkct_"))
        status, fetched, _ = self.rest("GET", "/clusters/default/tokens/" + created["id"])
        self.assertEqual(status, 200)
        self.assertNotIn("token", fetched)
        self.assertEqual(fetched["description"], "shown once")
        status, listed, _ = self.rest("GET", "/clusters/default/tokens?per_page=100")
        self.assertIn(created["id"], [t["id"] for t in listed])
        self.assertFalse(any("token" in t for t in listed))
        with open(os.path.join(self.dir, "state.json")) as handle:
            self.assertNotIn(created["token"], handle.read())

    def test_cluster_uuid_and_slug_both_address_the_cluster(self):
        status, clusters, _ = self.rest("GET", "/clusters")
        self.assertEqual(status, 200)
        by_uuid = self.rest("GET", "/clusters/%s/tokens" % clusters[0]["id"])[1]
        by_slug = self.rest("GET", "/clusters/default/tokens")[1]
        self.assertEqual(by_uuid, by_slug)
        self.assertEqual(self.rest("GET", "/clusters/nope/tokens")[0], 404)

    def test_deleting_a_revoked_token_again_is_not_found(self):
        created = self.create_token("twice")
        self.assertEqual(self.rest("DELETE", "/clusters/default/tokens/" + created["id"])[0],
                         204)
        self.assertEqual(self.rest("DELETE", "/clusters/default/tokens/" + created["id"])[0],
                         404)

    def test_rest_and_graphql_need_the_bearer_token(self):
        paths = ["/v2/organizations/demo/agents",
                 "/v2/organizations/demo/clusters/default/tokens"]
        for path in paths:
            self.assertEqual(self.call("GET", path)[0], 401, path)
            self.assertEqual(self.call("GET", path, bearer="bkua_wrong")[0], 401, path)
            self.assertEqual(self.call("GET", path, bearer=self.api_token)[0], 200, path)
        status, _, _ = self.call("POST", "/v2/organizations/demo/clusters/default/tokens",
                                 {"description": "x"})
        self.assertEqual(status, 401)
        status, _, _ = self.call("POST", "/v1", {"query": "{ organization(slug: \"demo\") "
                                                          "{ id } }"})
        self.assertEqual(status, 401)

    def test_graphql_creates_a_usable_token_and_revokes_it(self):
        org = self.graphql('query { organization(slug: "demo") { id cluster(id: "default")'
                           ' { id uuid } } }')["data"]["organization"]
        created = self.graphql(
            "mutation Create($input: ClusterAgentTokenCreateInput!) {"
            "  clusterAgentTokenCreate(input: $input) {"
            "    tokenValue clusterAgentTokenEdge { node { id uuid description } } } }",
            {"input": {"organizationId": org["id"], "clusterId": org["cluster"]["id"],
                       "description": "graphql rotation"}})
        payload = created["data"]["clusterAgentTokenCreate"]
        node = payload["clusterAgentTokenEdge"]["node"]
        self.assertEqual(node["description"], "graphql rotation")
        self.assertEqual(set(payload), {"tokenValue", "clusterAgentTokenEdge"})

        _, log_path = self.start_agent("gql-a", payload["tokenValue"])
        self.wait_for_line(log_path, 'Successfully registered agent "gql-a"')

        revoked = self.graphql(
            'mutation { clusterAgentTokenRevoke(input: {organizationId: "%s", id: "%s"}) '
            '{ deletedClusterAgentTokenId } }' % (org["id"], node["id"]), path="/graphql")
        self.assertEqual(revoked["data"]["clusterAgentTokenRevoke"],
                         {"deletedClusterAgentTokenId": node["id"]})
        process, second_log = self.start_agent("gql-b", payload["tokenValue"])
        self.assertEqual(process.wait(timeout=WAIT), 1)
        self.assertIn("Buildkite rejected the registration", self.log_of(second_log))
        self.assertNotIn(node["uuid"], [t["id"] for t in
                                        self.rest("GET", "/clusters/default/tokens")[1]])

    def test_graphql_reports_unknown_fields_and_tokens_as_errors(self):
        result = self.graphql('mutation { clusterAgentTokenRevoke(input: '
                              '{organizationId: "demo", id: "nope"}) '
                              '{ deletedClusterAgentTokenId } }')
        self.assertIsNone(result["data"]["clusterAgentTokenRevoke"])
        self.assertIn("No cluster agent token", result["errors"][0]["message"])
        result = self.graphql('mutation { clusterAgentTokenDestroy(input: {}) { id } }')
        self.assertIn("doesn't exist", result["errors"][0]["message"])


class LifecycleTests(StandinCase):

    def test_sigterm_during_a_fake_job_waits_for_it_to_finish(self):
        process, log_path = self.start_agent("job-a", self.default_token)
        self.wait_for_line(log_path, "job-a Waiting for instructions...")
        self.call("POST", "/_test/jobs", {"agent": "job-a", "seconds": 3})
        self.wait_for_line(log_path, "job-a Starting job")
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=WAIT), 0)
        lines = self.log_of(log_path).splitlines()
        order = [next(i for i, line in enumerate(lines) if text in line) for text in
                 ("Stopping gracefully: waiting for job", "Finished job", "Disconnected")]
        self.assertEqual(order, sorted(order))
        kinds = [e["type"] for e in self.events(agent="job-a")]
        self.assertLess(kinds.index("job_finished"), kinds.index("disconnect"))
        self.assertNotIn("job_interrupted", kinds)
        self.assertEqual(self.listed("job-a"), [])  # Disconnected agents leave the list.
        again = self.listed("job-a", include_disconnected="true")
        self.assertEqual(again[0]["connection_state"], "disconnected")

    def test_second_sigterm_abandons_the_job(self):
        process, log_path = self.start_agent("job-b", self.default_token)
        self.wait_for_line(log_path, "job-b Waiting for instructions...")
        self.call("POST", "/_test/jobs", {"agent": "job-b", "seconds": 600})
        self.wait_for_line(log_path, "job-b Starting job")
        process.send_signal(signal.SIGTERM)
        self.wait_for_line(log_path, "Stopping gracefully")
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=WAIT), 1)
        self.assertIn("Forced stop: abandoning job", self.log_of(log_path))
        self.assertEqual(self.events(type="job_interrupted", agent="job-b")[-1]["reason"],
                         "agent disconnected")

    def test_killed_agent_is_lost_after_missed_heartbeats(self):
        process, log_path = self.start_agent("lost-a", self.default_token)
        self.wait_for_line(log_path, "lost-a Waiting for instructions...")
        process.kill()
        process.wait()
        agent = wait_until(lambda: [a for a in self.listed("lost-a")
                                    if a["connection_state"] == "lost"], "lost-a lost")[0]
        self.assertIsNotNone(agent["lost_at"])
        self.assertEqual(len(self.events(type="lost", agent="lost-a")), 1)

    def test_agents_list_pages_and_filters(self):
        for index in range(3):
            self.register_directly("page-%d" % index, "pager-host")
        status, first, response = self.rest("GET", "/agents?hostname=pager-host&per_page=2")
        self.assertEqual((status, len(first)), (200, 2))
        self.assertIn('rel="next"', response.getheader("Link"))
        next_url = re.search(r'<([^>]+)>; rel="next"', response.getheader("Link")).group(1)
        status, second, response = self.rest("GET", "/agents" + next_url.split("/agents")[1])
        self.assertEqual(len(second), 1)
        self.assertIn('rel="prev"', response.getheader("Link"))
        names = {a["name"] for a in first + second}
        self.assertEqual(names, {"page-0", "page-1", "page-2"})
        self.assertEqual([a["name"] for a in self.listed("page-1")], ["page-1"])

    def test_state_survives_a_server_restart(self):
        created = self.create_token("restart")
        _, log_path = self.start_agent("restart-a", self.default_token)
        self.wait_for_line(log_path, "restart-a Waiting for instructions...")
        self.stop_server()
        self.start_server()
        self.assertIn(created["id"],
                      [t["id"] for t in self.rest("GET", "/clusters/default/tokens")[1]])
        # The running agent's session is still valid: it picks up a job after the restart.
        self.call("POST", "/_test/jobs", {"agent": "restart-a", "seconds": 0})
        self.wait_for_line(log_path, "restart-a Finished job")
        self.assertEqual(self.listed("restart-a")[0]["connection_state"], "connected")

    def test_reset_forgets_agents_and_restores_setup_tokens(self):
        status, tokens, _ = self.call("GET", "/_test/tokens")
        default = next(t for t in tokens if t["description"] == "default")
        self.register_directly("reset-a", "reset-host")
        self.rest("DELETE", "/clusters/default/tokens/" + default["id"])
        self.create_token("temporary")
        self.assertEqual(self.call("POST", "/_test/reset", {})[0], 200)
        self.assertEqual(self.listed("reset-a", include_disconnected="true"), [])
        live = [t["description"] for t in self.rest("GET", "/clusters/default/tokens")[1]]
        self.assertEqual(sorted(live), ["default", "second"])


class RequestCountTests(StandinCase):

    def counts(self):
        status, body, _ = self.call("GET", "/_test/requests")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["total"], sum(body["requests"].values()))
        return body["requests"]

    def counted_since(self, before):
        after = self.counts()
        for route, count in before.items():
            self.assertGreaterEqual(after.get(route, 0), count, "%s went down" % route)
        return {route: count - before.get(route, 0) for route, count in after.items()
                if count != before.get(route, 0)}

    def test_rest_requests_are_counted_per_route_with_ids_as_placeholders(self):
        first = self.create_token("count a")
        second = self.create_token("count b")
        agent = self.register_directly("count-a", "count-host")
        before = self.counts()

        self.rest("GET", "/agents")
        self.rest("GET", "/agents?per_page=100&page=1")  # The query is not part of the route.
        self.rest("GET", "/agents/" + agent["id"])
        self.rest("GET", "/agents/no-such-agent")  # A 404 is an answered request too.
        self.call("GET", "/v2/organizations/demo/agents")  # So is a 401.
        self.rest("DELETE", "/clusters/default/tokens/" + first["id"])
        self.rest("DELETE", "/clusters/%s/tokens/%s" % (first["cluster_url"].split("/")[-1],
                                                        second["id"]))
        self.call("GET", "/v2/access-token", bearer=self.api_token)
        # Neither the agent API, GraphQL nor the test API is REST.
        self.call("GET", "/_test/health")
        self.call("GET", "/v3/ping", raw_headers={"Authorization": "Token "
                                                  + agent["access_token"]})
        self.graphql('query { organization(slug: "demo") { id } }')

        self.assertEqual(self.counted_since(before), {
            "GET /v2/organizations/{org}/agents": 3,
            "GET /v2/organizations/{org}/agents/{agent}": 2,
            "DELETE /v2/organizations/{org}/clusters/{cluster}/tokens/{token}": 2,
            "GET /v2/access-token": 1,
        })

    def test_counts_only_grow_even_across_a_reset(self):
        self.rest("GET", "/clusters")
        before = self.counts()
        self.assertEqual(self.call("POST", "/_test/reset", {"keep_tokens": True})[0], 200)
        self.rest("GET", "/clusters")
        self.assertEqual(self.counted_since(before),
                         {"GET /v2/organizations/{org}/clusters": 1})


if __name__ == "__main__":
    unittest.main()
