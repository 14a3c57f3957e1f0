#!/usr/bin/python3
"""Buildkite API stand-in for the test fleet: agent API (/v3), REST (/v2), GraphQL (/v1,
/graphql) and a test-only API (/_test) on ONE HTTPS server, state kept in DIR/state.json.
It models only what bkfleet and its tests observe (registration, connection state, cluster
agent tokens, fake jobs); it is not a Buildkite clone, and it never stores or logs a token
value (only SHA-256 digests and "sha256:<12 hex>" fingerprints).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

ORG_SLUG = "demo"
ORG_NAME = "Demo"
CLUSTER_SLUG = "default"
CLUSTER_NAME = "Default"
# Stable ids, so inventories and tests may hard-code them across resets and machines.
ORG_UUID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "demo.org.buildkite.test"))
CLUSTER_UUID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "default.cluster.demo.buildkite.test"))
STANDIN_USER = {
    "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "operator.demo.buildkite.test")),
    "name": "Fleet Operator",
    "email": "operator@buildkite.test",
}
STATE_VERSION = 1
MAX_EVENTS = 200000  # LIMITATION: older events are dropped beyond this many.


def now_iso(ts=None):
    """ISO 8601 UTC with milliseconds, as Buildkite prints timestamps."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def parse_iso(text):
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def sha256_hex(value):
    return hashlib.sha256(value.encode()).hexdigest()


def fingerprint_of_digest(digest):
    return "sha256:" + digest[:12]


def graphql_id(type_name, raw_uuid):
    return base64.b64encode(("%s---%s" % (type_name, raw_uuid)).encode()).decode()


QUIET = False  # --init records tokens without chatter.


def log(message):
    """Server log line on stderr; callers pass ids and fingerprints, never token values."""
    if QUIET:
        return
    sys.stderr.write("%s %s\n" % (now_iso(), message))
    sys.stderr.flush()


# The segment after each of these REST collection names is an id, slug or name; request
# counts group it under a placeholder so a route is counted once whatever it addresses.
ROUTE_PLACEHOLDERS = {"organizations": "{org}", "agents": "{agent}", "clusters": "{cluster}",
                      "tokens": "{token}", "pipelines": "{pipeline}", "builds": "{build}",
                      "jobs": "{job}", "queues": "{queue}"}


def rest_route(method, path):
    """The route a request is counted under: GET /v2/organizations/demo/agents?page=2 is
    "GET /v2/organizations/{org}/agents". The query is left out, the segment after a known
    collection becomes its placeholder, other segments stay as sent."""
    out, collection = [], None
    for part in [p for p in urlsplit(path).path.split("/") if p]:
        if collection:
            out.append(ROUTE_PLACEHOLDERS[collection])
            collection = None
        else:
            out.append(part)
            collection = part if part in ROUTE_PLACEHOLDERS else None
    return "%s /%s" % (method, "/".join(out))


class RequestCounter:
    """REST requests answered since the server started, per route. Kept in memory only and
    never reset (not even by /_test/reset), so tests compare counts before and after."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, route):
        with self.lock:
            self.counts[route] = self.counts.get(route, 0) + 1

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------

class Store:
    """All state behind one lock; persisted atomically to DIR/state.json on every change
    except liveness (heartbeats/pings), which only lives in memory."""

    def __init__(self, state_dir, lost_after=20.0):
        self.path = os.path.join(state_dir, "state.json")
        self.lock = threading.RLock()
        self.lost_after = lost_after
        self.data = self._load()
        self.by_access = {}
        now = time.time()
        for agent in self.data["agents"]:
            self.by_access[agent["access_sha256"]] = agent
            # A restarted server gives connected agents a fresh grace period.
            agent["last_seen"] = now

    # -- persistence --------------------------------------------------------------------

    def _empty(self):
        return {"version": STATE_VERSION, "tokens": [], "agents": [], "jobs": [],
                "events": [], "next_seq": 1}

    def _load(self):
        if not os.path.exists(self.path):
            return self._empty()
        try:
            with open(self.path) as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            raise SystemExit("%s: cannot read stand-in state (%s); remove it and rerun "
                             "setup.sh to start afresh" % (self.path, error))
        for key, value in self._empty().items():
            data.setdefault(key, value)
        return data

    def save(self):
        with self.lock:
            tmp = "%s.tmp.%d" % (self.path, os.getpid())
            with open(tmp, "w") as handle:
                json.dump(self.data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)

    # -- events -------------------------------------------------------------------------

    def event(self, kind, **fields):
        with self.lock:
            record = {"seq": self.data["next_seq"], "at": now_iso(), "type": kind}
            record.update({k: v for k, v in fields.items() if v is not None})
            self.data["next_seq"] += 1
            self.data["events"].append(record)
            if len(self.data["events"]) > MAX_EVENTS:
                del self.data["events"][: len(self.data["events"]) - MAX_EVENTS]
            described = " ".join("%s=%s" % (k, record[k]) for k in
                                 ("agent_name", "agent_id", "token_id", "token_fingerprint",
                                  "job_id", "reason") if k in record)
            log("event %s %s" % (kind, described))
            return record

    # -- tokens -------------------------------------------------------------------------

    def add_token(self, value, description, via, setup=False, expires_at=None,
                  allowed_ip_addresses=None):
        with self.lock:
            digest = sha256_hex(value)
            for token in self.data["tokens"]:
                if token["sha256"] == digest:
                    return token
            token = {
                "id": str(uuid.uuid4()),
                "description": description,
                "sha256": digest,
                "created_at": now_iso(),
                "revoked_at": None,
                "expires_at": expires_at,
                "allowed_ip_addresses": allowed_ip_addresses,
                "setup": setup,
            }
            self.data["tokens"].append(token)
            self.event("token_created", token_id=token["id"],
                       token_fingerprint=fingerprint_of_digest(digest),
                       description=description, via=via)
            self.save()
            return token

    def find_token(self, token_id):
        """A token by uuid or GraphQL id; revoked tokens are gone, as on Buildkite."""
        for token in self.data["tokens"]:
            if token_id in (token["id"], graphql_id("ClusterToken", token["id"])):
                return None if token["revoked_at"] else token
        return None

    def revoke_token(self, token_id, via):
        with self.lock:
            token = self.find_token(token_id)
            if token is None:
                return None
            token["revoked_at"] = now_iso()
            self.event("token_revoked", token_id=token["id"],
                       token_fingerprint=fingerprint_of_digest(token["sha256"]), via=via)
            self.save()
            return token

    def live_tokens(self):
        return [t for t in self.data["tokens"] if not t["revoked_at"]]

    # -- agents -------------------------------------------------------------------------

    def register(self, value, body, ip_address):
        """Register an agent with a registration token; raises ApiError(401) when refused."""
        with self.lock:
            name = str(body.get("name") or "")
            hostname = str(body.get("hostname") or "")
            if not value:
                self.event("register_rejected", agent_name=name, hostname=hostname,
                           reason="missing token", ip_address=ip_address)
                raise ApiError(401, "No agent registration token was sent")
            digest = sha256_hex(value)
            token = next((t for t in self.data["tokens"] if t["sha256"] == digest), None)
            reason = None
            if token is None:
                reason = "unknown token"
            elif token["revoked_at"]:
                reason = "revoked token"
            elif token.get("expires_at") and (parse_iso(token["expires_at"]) or 0) < time.time():
                reason = "expired token"
            if reason:
                self.event("register_rejected", agent_name=name, hostname=hostname,
                           token_id=token["id"] if token else None,
                           token_fingerprint=fingerprint_of_digest(digest), reason=reason,
                           ip_address=ip_address)
                self.save()
                raise ApiError(401, "Invalid agent registration token")
            if not name:
                raise ApiError(422, "Agent name is missing from the registration")
            access_token = secrets.token_hex(24)
            meta_data = [str(m) for m in body.get("meta_data") or []]
            agent = {
                "id": str(uuid.uuid4()),
                "name": name,
                "hostname": hostname,
                "ip_address": ip_address,
                "version": str(body.get("version") or ""),
                "user_agent": str(body.get("user_agent") or ""),
                "os": str(body.get("os") or ""),
                "arch": str(body.get("arch") or ""),
                "pid": body.get("pid"),
                "meta_data": meta_data,
                "token_id": token["id"],
                "token_fingerprint": fingerprint_of_digest(digest),
                "access_sha256": sha256_hex(access_token),
                "connection_state": "never_connected",
                "created_at": now_iso(),
                "connected_at": None,
                "disconnected_at": None,
                "lost_at": None,
                "last_seen": time.time(),
            }
            self.data["agents"].append(agent)
            self.by_access[agent["access_sha256"]] = agent
            self.event("register", agent_id=agent["id"], agent_name=name, hostname=hostname,
                       token_id=token["id"], token_fingerprint=agent["token_fingerprint"],
                       meta_data=meta_data, ip_address=ip_address)
            self.save()
            return agent, access_token

    def agent_for_access(self, value):
        with self.lock:
            agent = self.by_access.get(sha256_hex(value)) if value else None
            if agent is None or agent["connection_state"] == "disconnected":
                raise ApiError(401, "Unknown or disconnected agent session; register again")
            return agent

    def touch(self, agent):
        """Liveness from a heartbeat or ping; a lost agent that speaks again is back."""
        with self.lock:
            agent["last_seen"] = time.time()  # Not persisted on its own: see __init__.
            if agent["connection_state"] == "lost":
                agent["connection_state"] = "connected"
                agent["lost_at"] = None
                self.event("reconnect", agent_id=agent["id"], agent_name=agent["name"],
                           token_id=agent["token_id"], meta_data=agent["meta_data"])
                self.save()

    def connect(self, agent):
        with self.lock:
            agent["connection_state"] = "connected"
            agent["connected_at"] = now_iso()
            agent["last_seen"] = time.time()
            self.event("connect", agent_id=agent["id"], agent_name=agent["name"],
                       hostname=agent["hostname"], token_id=agent["token_id"],
                       meta_data=agent["meta_data"])
            self.save()

    def _interrupt_jobs(self, agent, why):
        for job in self.data["jobs"]:
            if job.get("agent_id") == agent["id"] and job["state"] in (
                    "assigned", "accepted", "running"):
                job["state"] = "interrupted"
                job["finished_at"] = now_iso()
                self.event("job_interrupted", job_id=job["id"], agent_id=agent["id"],
                           agent_name=agent["name"], reason=why)

    def disconnect(self, agent):
        with self.lock:
            agent["connection_state"] = "disconnected"
            agent["disconnected_at"] = now_iso()
            self._interrupt_jobs(agent, "agent disconnected")
            self.event("disconnect", agent_id=agent["id"], agent_name=agent["name"],
                       hostname=agent["hostname"], token_id=agent["token_id"],
                       meta_data=agent["meta_data"])
            self.save()

    def reap_lost(self):
        with self.lock:
            limit = time.time() - self.lost_after
            changed = False
            for agent in self.data["agents"]:
                if agent["connection_state"] in ("connected", "never_connected") and \
                        agent["last_seen"] < limit:
                    agent["connection_state"] = "lost"
                    agent["lost_at"] = now_iso()
                    self._interrupt_jobs(agent, "agent lost")
                    self.event("lost", agent_id=agent["id"], agent_name=agent["name"],
                               hostname=agent["hostname"], token_id=agent["token_id"],
                               meta_data=agent["meta_data"])
                    changed = True
            if changed:
                self.save()

    # -- jobs ---------------------------------------------------------------------------

    def queue_job(self, agent_name, seconds):
        with self.lock:
            job = {"id": str(uuid.uuid4()), "agent_name": agent_name, "seconds": seconds,
                   "state": "scheduled", "agent_id": None, "created_at": now_iso(),
                   "accepted_at": None, "started_at": None, "finished_at": None,
                   "exit_status": None}
            self.data["jobs"].append(job)
            self.event("job_queued", job_id=job["id"], agent_name=agent_name, seconds=seconds)
            self.save()
            return job

    def job_for_ping(self, agent):
        with self.lock:
            for job in self.data["jobs"]:
                if job["agent_id"] == agent["id"] and job["state"] == "assigned":
                    return job
            for job in self.data["jobs"]:
                if job["state"] == "scheduled" and job["agent_name"] == agent["name"]:
                    job["state"] = "assigned"
                    job["agent_id"] = agent["id"]
                    self.save()
                    return job
            return None

    def job_transition(self, agent, job_id, action, body):
        steps = {"accept": (("assigned",), "accepted", "accepted_at", "job_accepted"),
                 "start": (("accepted",), "running", "started_at", "job_started"),
                 "finish": (("running",), "finished", "finished_at", "job_finished")}
        if action not in steps:
            raise ApiError(404, "Not Found")
        allowed, new_state, stamp, kind = steps[action]
        with self.lock:
            job = next((j for j in self.data["jobs"] if j["id"] == job_id), None)
            if job is None or job["agent_id"] != agent["id"]:
                raise ApiError(404, "No job %s for this agent" % job_id)
            if job["state"] not in allowed:
                raise ApiError(422, "Job %s is %s; cannot %s it" % (job_id, job["state"], action))
            job["state"] = new_state
            job[stamp] = now_iso()
            if action == "finish":
                job["exit_status"] = str(body.get("exit_status", "0"))
            self.event(kind, job_id=job_id, agent_id=agent["id"], agent_name=agent["name"],
                       seconds=job["seconds"], exit_status=job["exit_status"])
            self.save()
            return job

    # -- reset --------------------------------------------------------------------------

    def reset(self, keep_tokens):
        with self.lock:
            if not keep_tokens:
                kept = [t for t in self.data["tokens"] if t.get("setup")]
                for token in kept:
                    token["revoked_at"] = None
                self.data["tokens"] = kept
            self.data["agents"] = []
            self.data["jobs"] = []
            self.data["events"] = []
            self.by_access = {}
            self.save()


# ---------------------------------------------------------------------------------------
# Presentation (REST and GraphQL shapes)
# ---------------------------------------------------------------------------------------

def org_json(base):
    return {"id": ORG_UUID, "graphql_id": graphql_id("Organization", ORG_UUID),
            "url": "%s/v2/organizations/%s" % (base, ORG_SLUG), "slug": ORG_SLUG,
            "name": ORG_NAME, "web_url": "https://buildkite.test/%s" % ORG_SLUG}


def cluster_json(base):
    url = "%s/v2/organizations/%s/clusters/%s" % (base, ORG_SLUG, CLUSTER_UUID)
    return {"id": CLUSTER_UUID, "graphql_id": graphql_id("Cluster", CLUSTER_UUID),
            "name": CLUSTER_NAME, "description": "Cluster of the test fleet",
            "url": url, "queues_url": url + "/queues", "created_at": "2024-01-01T00:00:00.000Z",
            "created_by": STANDIN_USER}


def token_json(base, token, value=None):
    cluster_url = "%s/v2/organizations/%s/clusters/%s" % (base, ORG_SLUG, CLUSTER_UUID)
    body = {"id": token["id"], "graphql_id": graphql_id("ClusterToken", token["id"]),
            "description": token["description"],
            "allowed_ip_addresses": token.get("allowed_ip_addresses"),
            "expires_at": token.get("expires_at"),
            "url": "%s/tokens/%s" % (cluster_url, token["id"]), "cluster_url": cluster_url,
            "created_at": token["created_at"], "created_by": STANDIN_USER}
    if value is not None:
        body["token"] = value  # Buildkite shows a token's value in the create response only.
    return body


def agent_json(base, agent):
    queue = next((m.split("=", 1)[1] for m in agent["meta_data"] if m.startswith("queue=")),
                 "default")
    return {"id": agent["id"], "graphql_id": graphql_id("Agent", agent["id"]),
            "url": "%s/v2/organizations/%s/agents/%s" % (base, ORG_SLUG, agent["id"]),
            "web_url": "https://buildkite.test/organizations/%s/agents/%s" % (ORG_SLUG,
                                                                               agent["id"]),
            "name": agent["name"], "connection_state": agent["connection_state"],
            "hostname": agent["hostname"], "ip_address": agent["ip_address"],
            "user_agent": agent["user_agent"], "version": agent["version"],
            "os_id": agent.get("os"), "arch": agent.get("arch"),
            "cluster_id": CLUSTER_UUID, "queue": queue,
            "creator": None, "created_at": agent["created_at"],
            "connected_at": agent["connected_at"], "disconnected_at": agent["disconnected_at"],
            "lost_at": agent["lost_at"], "job": None, "last_job_finished_at": None,
            "priority": None, "meta_data": list(agent["meta_data"])}


def graphql_token_object(store, token):
    return {"__typename": "ClusterToken", "id": graphql_id("ClusterToken", token["id"]),
            "uuid": token["id"], "description": token["description"],
            "allowedIpAddresses": token.get("allowed_ip_addresses"),
            "expiresAt": token.get("expires_at"), "createdAt": token["created_at"],
            "token": "", "createdBy": graphql_user(), "cluster": graphql_cluster(store)}


def graphql_user():
    return {"__typename": "User", "id": graphql_id("User", STANDIN_USER["id"]),
            "uuid": STANDIN_USER["id"], "name": STANDIN_USER["name"],
            "email": STANDIN_USER["email"]}


def graphql_cluster(store):
    return {"__typename": "Cluster", "id": graphql_id("Cluster", CLUSTER_UUID),
            "uuid": CLUSTER_UUID, "name": CLUSTER_NAME,
            "description": "Cluster of the test fleet"}


def graphql_org(store):
    def cluster(args):
        return graphql_cluster(store) if matches_cluster(str(args.get("id", ""))) else None
    return {"__typename": "Organization", "id": graphql_id("Organization", ORG_UUID),
            "uuid": ORG_UUID, "slug": ORG_SLUG, "name": ORG_NAME, "cluster": cluster}


def matches_org(value):
    return value in (ORG_SLUG, ORG_UUID, graphql_id("Organization", ORG_UUID))


def matches_cluster(value):
    return value in (CLUSTER_SLUG, CLUSTER_UUID, graphql_id("Cluster", CLUSTER_UUID))


# ---------------------------------------------------------------------------------------
# A small GraphQL reader: operations, variables, fields, aliases, arguments and literal
# values. LIMITATION: fragments, directives and subscriptions are refused.
# ---------------------------------------------------------------------------------------

class GraphQLError(Exception):
    pass


GQL_TOKEN = re.compile(r'''
    (?P<ws>[\s,\ufeff]+|\#[^\n]*)
  | (?P<block>"""(?:\\"""|[^"]|"(?!""))*""")
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$()\:=@\[\]{}|&])
''', re.VERBOSE)


def gql_tokens(text):
    position, out = 0, []
    while position < len(text):
        match = GQL_TOKEN.match(text, position)
        if not match:
            raise GraphQLError("Syntax error: unexpected character %r at offset %d"
                               % (text[position], position))
        kind = match.lastgroup
        position = match.end()
        if kind == "ws":
            continue
        out.append((kind, match.group()))
    out.append(("eof", ""))
    return out


class GQLParser:
    def __init__(self, text):
        self.tokens = gql_tokens(text)
        self.index = 0

    def peek(self, value=None):
        kind, text = self.tokens[self.index]
        return text == value if value is not None else (kind, text)

    def take(self, value=None, kind=None):
        got_kind, got = self.tokens[self.index]
        if (value is not None and got != value) or (kind is not None and got_kind != kind):
            raise GraphQLError("Syntax error: expected %s, got %r" % (value or kind, got))
        self.index += 1
        return got

    def document(self):
        operations = []
        while self.peek()[0] != "eof":
            if self.peek("fragment"):
                raise GraphQLError("Fragments are not supported by the stand-in")
            operations.append(self.operation())
        return operations

    def operation(self):
        kind, name, variables = "query", None, []
        if self.peek("{"):
            return {"kind": kind, "name": None, "variables": [], "selections": self.selections()}
        kind = self.take(kind="name")
        if kind not in ("query", "mutation"):
            raise GraphQLError("Unsupported operation type %r" % kind)
        if self.peek()[0] == "name":
            name = self.take()
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                self.take("$")
                var = self.take(kind="name")
                self.take(":")
                self.type_ref()
                default = None
                if self.peek("="):
                    self.take("=")
                    default = self.value()
                variables.append((var, default))
            self.take(")")
        if self.peek("@"):
            raise GraphQLError("Directives are not supported by the stand-in")
        return {"kind": kind, "name": name, "variables": variables,
                "selections": self.selections()}

    def type_ref(self):
        if self.peek("["):
            self.take("[")
            self.type_ref()
            self.take("]")
        else:
            self.take(kind="name")
        if self.peek("!"):
            self.take("!")

    def selections(self):
        self.take("{")
        fields = []
        while not self.peek("}"):
            if self.peek()[0] == "spread":
                raise GraphQLError("Fragments are not supported by the stand-in")
            first = self.take(kind="name")
            alias, name = first, first
            if self.peek(":"):
                self.take(":")
                name = self.take(kind="name")
            args = {}
            if self.peek("("):
                self.take("(")
                while not self.peek(")"):
                    arg = self.take(kind="name")
                    self.take(":")
                    args[arg] = self.value()
                self.take(")")
            if self.peek("@"):
                raise GraphQLError("Directives are not supported by the stand-in")
            sub = self.selections() if self.peek("{") else None
            fields.append({"alias": alias, "name": name, "args": args, "selections": sub})
        self.take("}")
        return fields

    def value(self):
        kind, text = self.peek()
        if text == "$":
            self.take("$")
            return ("var", self.take(kind="name"))
        if text == "[":
            self.take("[")
            items = []
            while not self.peek("]"):
                items.append(self.value())
            self.take("]")
            return ("list", items)
        if text == "{":
            self.take("{")
            items = {}
            while not self.peek("}"):
                key = self.take(kind="name")
                self.take(":")
                items[key] = self.value()
            self.take("}")
            return ("object", items)
        self.take()
        if kind == "string":
            return ("const", json.loads(text))
        if kind == "block":
            return ("const", text[3:-3].replace('\\"""', '"""'))
        if kind == "number":
            return ("const", float(text) if re.search(r"[.eE]", text) else int(text))
        if kind == "name":
            return ("const", {"true": True, "false": False, "null": None}.get(text, text))
        raise GraphQLError("Syntax error: unexpected %r" % text)


def gql_resolve(value, variables):
    kind, payload = value
    if kind == "var":
        return variables.get(payload)
    if kind == "list":
        return [gql_resolve(v, variables) for v in payload]
    if kind == "object":
        return {k: gql_resolve(v, variables) for k, v in payload.items()}
    return payload


def gql_project(selections, obj, variables, path, errors):
    """Keep exactly the selected fields of obj (dict); callables take the field's args."""
    out = {}
    for field in selections:
        name, key = field["name"], field["alias"]
        if name not in obj:
            raise GraphQLError("Field '%s' doesn't exist on type '%s'"
                               % (name, obj.get("__typename", "?")))
        value = obj[name]
        if callable(value):
            value = value({k: gql_resolve(v, variables) for k, v in field["args"].items()})
        if field["selections"] is not None and isinstance(value, dict):
            value = gql_project(field["selections"], value, variables, path + [key], errors)
        elif field["selections"] is not None and isinstance(value, list):
            value = [gql_project(field["selections"], v, variables, path + [key], errors)
                     for v in value]
        out[key] = value
    return out


def graphql_execute(store, request):
    """Serve clusterAgentTokenCreate, clusterAgentTokenRevoke and organization(slug)."""
    query = request.get("query")
    if not isinstance(query, str):
        raise GraphQLError("No query string was present")
    variables = request.get("variables") or {}
    if isinstance(variables, str):
        try:
            variables = json.loads(variables)
        except ValueError:
            raise GraphQLError("variables is not valid JSON")
    operations = GQLParser(query).document()
    wanted = request.get("operationName")
    chosen = [o for o in operations if wanted is None or o["name"] == wanted]
    if len(chosen) != 1:
        raise GraphQLError("Pick exactly one operation with operationName")
    operation = chosen[0]
    for name, default in operation["variables"]:
        if name not in variables and default is not None:
            variables[name] = gql_resolve(default, {})
    errors, data = [], {}

    def create(args):
        spec = args.get("input") or {}
        if not matches_org(str(spec.get("organizationId", ""))):
            raise GraphQLError("No organization found for organizationId")
        if not matches_cluster(str(spec.get("clusterId", ""))):
            raise GraphQLError("No cluster found for clusterId")
        if not spec.get("description"):
            raise GraphQLError("Argument 'description' on InputObject "
                               "'ClusterAgentTokenCreateInput' is required")
        value = "bkct_" + secrets.token_hex(20)
        token = store.add_token(value, str(spec["description"]), "graphql",
                                expires_at=spec.get("expiresAt"),
                                allowed_ip_addresses=spec.get("allowedIpAddresses"))
        node = graphql_token_object(store, token)
        return {"__typename": "ClusterAgentTokenCreatePayload",
                "clientMutationId": spec.get("clientMutationId"), "tokenValue": value,
                "clusterAgentToken": node,
                "clusterAgentTokenEdge": {"__typename": "ClusterTokenEdge",
                                          "cursor": token["id"], "node": node}}

    def revoke(args):
        spec = args.get("input") or {}
        if not matches_org(str(spec.get("organizationId", ""))):
            raise GraphQLError("No organization found for organizationId")
        token = store.revoke_token(str(spec.get("id", "")), "graphql")
        if token is None:
            raise GraphQLError("No cluster agent token found for id %r" % spec.get("id"))
        return {"__typename": "ClusterAgentTokenRevokePayload",
                "clientMutationId": spec.get("clientMutationId"),
                "deletedClusterAgentTokenId": graphql_id("ClusterToken", token["id"])}

    if operation["kind"] == "mutation":
        root = {"__typename": "Mutation", "clusterAgentTokenCreate": create,
                "clusterAgentTokenRevoke": revoke}
    else:
        root = {"__typename": "Query",
                "organization": lambda a: graphql_org(store) if matches_org(
                    str(a.get("slug", a.get("id", "")))) else None}
    for field in operation["selections"]:
        key = field["alias"]
        try:
            data.update(gql_project([field], root, variables, [], errors))
        except GraphQLError as error:
            data[key] = None
            errors.append({"message": str(error), "path": [key]})
    result = {"data": data}
    if errors:
        result["errors"] = errors
    return result


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "buildkite-standin"
    timeout = 75  # Idle keep-alive connections close after this.

    # -- plumbing -----------------------------------------------------------------------

    def log_message(self, fmt, *args):
        pass  # One line per request is written by reply(), without headers or bodies.

    def base_url(self):
        return "https://" + (self.headers.get("Host") or "api.buildkite.test")

    def body_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise ApiError(400, "Request body is not valid JSON")
        if not isinstance(value, dict):
            raise ApiError(400, "Request body must be a JSON object")
        return value

    def reply(self, status, body=None, headers=None):
        # Counted before the answer leaves, so a client that has its answer sees it
        # counted; taken off the request so a failed send's 500 does not count twice.
        route, self.counted_route = getattr(self, "counted_route", None), None
        if route:
            self.server.requests.add(route)
        payload = b"" if body is None else json.dumps(body, indent=1).encode() + b"\n"
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)
        log("%s %s %s %d" % (self.client_address[0], self.command,
                             urlsplit(self.path).path, status))

    def auth_value(self, scheme):
        header = self.headers.get("Authorization") or ""
        parts = header.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == scheme.lower():
            return parts[1].strip()
        return None

    def dispatch(self):
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        # Every /v2 request is counted once answered, whatever its status (a 401 or 404
        # is a call to the API all the same).
        self.counted_route = rest_route(self.command, self.path) if parts[:1] == ["v2"] \
            else None
        try:
            if not parts:
                return self.reply(200, {"message": "Buildkite stand-in",
                                        "timestamp": int(time.time())})
            if parts[0] == "v3":
                return self.agent_api(parts[1:])
            if parts[0] == "v2":
                return self.rest_api(parts[1:])
            if parts in (["v1"], ["graphql"]):
                return self.graphql_api()
            if parts[0] == "_test":
                return self.test_api(parts[1:])
            raise ApiError(404, "Not Found")
        except ApiError as error:
            self.reply(error.status, {"message": error.message})
        except Exception as error:  # A stand-in bug must not look like a network failure.
            log("internal error on %s %s: %r" % (self.command, url.path, error))
            self.reply(500, {"message": "Stand-in internal error: %s" % type(error).__name__})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = lambda self: self.dispatch()

    # -- agent API (/v3) ----------------------------------------------------------------

    def agent_api(self, parts):
        store = self.server.store
        method = self.command
        if parts == ["register"] and method == "POST":
            body = self.body_json()
            value = self.auth_value("Token") or self.auth_value("Bearer")
            agent, access_token = store.register(value, body, self.client_address[0])
            return self.reply(200, {
                "id": agent["id"], "name": agent["name"], "access_token": access_token,
                "endpoint": self.base_url() + "/v3",
                "ping_interval": self.server.ping_interval,
                "job_status_interval": self.server.ping_interval,
                "heartbeat_interval": self.server.heartbeat_interval,
                "meta_data": agent["meta_data"]})
        agent = store.agent_for_access(self.auth_value("Token"))
        if parts == ["connect"] and method == "POST":
            self.body_json()
            store.connect(agent)
            return self.reply(200, {"id": agent["id"], "connection_state": "connected"})
        if parts == ["heartbeat"] and method == "POST":
            body = self.body_json()
            store.touch(agent)
            return self.reply(200, {"sent_at": body.get("sent_at"), "received_at": now_iso()})
        if parts == ["ping"] and method == "GET":
            store.touch(agent)
            job = store.job_for_ping(agent)
            if job is None:
                return self.reply(200, {"action": ""})
            return self.reply(200, {"action": "", "job": {
                "id": job["id"], "state": job["state"], "runnable_at": job["created_at"],
                "env": {"BUILDKITE_JOB_ID": job["id"],
                        "BUILDKITE_COMMAND": "sleep %s" % job["seconds"],
                        "BUILDKITE_AGENT_NAME": agent["name"]},
                "standin_seconds": job["seconds"]}})
        if parts == ["disconnect"] and method == "POST":
            self.body_json()
            store.disconnect(agent)
            return self.reply(200, {"id": agent["id"], "connection_state": "disconnected"})
        if len(parts) == 3 and parts[0] == "jobs" and method == "PUT":
            job = store.job_transition(agent, parts[1], parts[2], self.body_json())
            return self.reply(200, {"id": job["id"], "state": job["state"]})
        raise ApiError(404, "Not Found")

    # -- REST (/v2) ---------------------------------------------------------------------

    def rest_api(self, parts):
        given = self.auth_value("Bearer")
        if not given or not secrets.compare_digest(given, self.server.api_token):
            raise ApiError(401, "Authentication required. Send a valid API access token "
                                "as 'Authorization: Bearer <token>'.")
        store = self.server.store
        base = self.base_url()
        method = self.command
        if parts == ["access-token"] and method == "GET":
            return self.reply(200, {"uuid": STANDIN_USER["id"],
                                    "scopes": ["read_agents", "read_clusters",
                                               "write_clusters", "graphql"]})
        if parts == ["organizations"] and method == "GET":
            return self.reply(200, [org_json(base)])
        if len(parts) < 2 or parts[0] != "organizations" or parts[1] != ORG_SLUG:
            raise ApiError(404, "No organization found")
        rest = parts[2:]
        if rest == [] and method == "GET":
            return self.reply(200, org_json(base))
        if rest == ["agents"] and method == "GET":
            return self.list_agents(base)
        if len(rest) == 2 and rest[0] == "agents" and method == "GET":
            agent = next((a for a in store.data["agents"] if a["id"] == rest[1]), None)
            if agent is None:
                raise ApiError(404, "No agent found")
            return self.reply(200, agent_json(base, agent))
        if rest == ["clusters"] and method == "GET":
            return self.reply(200, [cluster_json(base)])
        if len(rest) < 2 or rest[0] != "clusters" or not matches_cluster(rest[1]):
            raise ApiError(404, "No cluster found")
        rest = rest[2:]
        if rest == [] and method == "GET":
            return self.reply(200, cluster_json(base))
        if rest == ["tokens"] and method == "GET":
            with store.lock:
                tokens = [token_json(base, t) for t in store.live_tokens()]
            return self.paged(tokens)
        if rest == ["tokens"] and method == "POST":
            body = self.body_json()
            description = body.get("description")
            if not isinstance(description, str) or not description.strip():
                raise ApiError(422, "Validation failed: description can't be blank")
            value = "bkct_" + secrets.token_hex(20)
            token = store.add_token(value, description, "rest",
                                    expires_at=body.get("expires_at"),
                                    allowed_ip_addresses=body.get("allowed_ip_addresses"))
            return self.reply(201, token_json(base, token, value))
        if len(rest) == 2 and rest[0] == "tokens":
            if method == "GET":
                token = store.find_token(rest[1])
                if token is None:
                    raise ApiError(404, "No token found")
                return self.reply(200, token_json(base, token))
            if method == "DELETE":
                if store.revoke_token(rest[1], "rest") is None:
                    raise ApiError(404, "No token found")
                return self.reply(204)
        raise ApiError(404, "Not Found")

    def list_agents(self, base):
        """Buildkite lists connected agents; disconnected ones are left out unless the
        stand-in's own ?include_disconnected=true asks for them."""
        store = self.server.store
        include_all = self.query.get("include_disconnected", "").lower() in ("1", "true")
        with store.lock:
            agents = [a for a in reversed(store.data["agents"])
                      if include_all or a["connection_state"] != "disconnected"]
            for field in ("name", "hostname", "version"):
                if field in self.query:
                    agents = [a for a in agents if a[field] == self.query[field]]
            listed = [agent_json(base, a) for a in agents]
        return self.paged(listed)

    def paged(self, items):
        try:
            page = max(1, int(self.query.get("page", "1")))
            per_page = min(100, max(1, int(self.query.get("per_page", "30"))))
        except ValueError:
            raise ApiError(400, "page and per_page must be integers")
        last = max(1, (len(items) + per_page - 1) // per_page)
        chunk = items[(page - 1) * per_page: page * per_page]
        path = urlsplit(self.path).path
        links = []

        def link(number, rel):
            params = dict(self.query, page=str(number), per_page=str(per_page))
            links.append('<%s%s?%s>; rel="%s"' % (self.base_url(), path, urlencode(params), rel))
        if page < last:
            link(page + 1, "next")
            link(last, "last")
        if page > 1:
            link(1, "first")
            link(page - 1, "prev")
        return self.reply(200, chunk, {"Link": ", ".join(links)} if links else None)

    # -- GraphQL (/v1, /graphql) --------------------------------------------------------

    def graphql_api(self):
        if self.command != "POST":
            raise ApiError(404, "Not Found")
        given = self.auth_value("Bearer")
        if not given or not secrets.compare_digest(given, self.server.api_token):
            return self.reply(401, {"errors": [{"message": "Authentication required. Send a "
                                                "valid API access token as a bearer token."}]})
        request = self.body_json()
        try:
            result = graphql_execute(self.server.store, request)
        except GraphQLError as error:
            result = {"errors": [{"message": str(error)}]}
        return self.reply(200, result)

    # -- test-only API (/_test) ---------------------------------------------------------

    def test_api(self, parts):
        store = self.server.store
        method = self.command
        if parts == ["health"] and method == "GET":
            with store.lock:
                connected = sum(1 for a in store.data["agents"]
                                if a["connection_state"] == "connected")
            return self.reply(200, {"ok": True, "connected_agents": connected})
        if parts == ["events"] and method == "GET":
            try:
                since = int(self.query.get("since", "0"))
            except ValueError:
                raise ApiError(400, "since must be an integer")
            types = set(filter(None, self.query.get("type", "").split(",")))
            name = self.query.get("agent")
            with store.lock:
                events = [dict(e) for e in store.data["events"] if e["seq"] > since
                          and (not types or e["type"] in types)
                          and (name is None or e.get("agent_name") == name)]
                next_seq = store.data["next_seq"]
            return self.reply(200, {"events": events, "next_seq": next_seq})
        if parts == ["agents"] and method == "GET":
            name = self.query.get("name")
            with store.lock:
                agents = [{k: v for k, v in a.items() if k not in ("access_sha256", "last_seen")}
                          for a in store.data["agents"] if name in (None, a["name"])]
            return self.reply(200, agents)
        if parts == ["tokens"] and method == "GET":
            with store.lock:
                tokens = [{"id": t["id"], "description": t["description"],
                           "fingerprint": fingerprint_of_digest(t["sha256"]),
                           "created_at": t["created_at"], "revoked_at": t["revoked_at"],
                           "setup": t.get("setup", False)} for t in store.data["tokens"]]
            return self.reply(200, tokens)
        if parts == ["jobs"] and method == "GET":
            with store.lock:
                return self.reply(200, [dict(j) for j in store.data["jobs"]])
        if parts == ["jobs"] and method == "POST":
            body = self.body_json()
            name, seconds = body.get("agent"), body.get("seconds", 10)
            if not isinstance(name, str) or not name:
                raise ApiError(422, "Give the agent's name as \"agent\"")
            if not isinstance(seconds, (int, float)) or seconds < 0:
                raise ApiError(422, "\"seconds\" must be a non-negative number")
            return self.reply(201, store.queue_job(name, seconds))
        if parts == ["requests"] and method == "GET":
            counts = self.server.requests.snapshot()
            return self.reply(200, {"requests": counts, "total": sum(counts.values()),
                                    "started_at": self.server.started_at})
        if parts == ["reset"] and method == "POST":
            body = self.body_json()
            store.reset(keep_tokens=bool(body.get("keep_tokens")))
            return self.reply(200, {"ok": True})
        raise ApiError(404, "Not Found")


class StandinServer(ThreadingHTTPServer):
    """TLS is negotiated in each connection's own thread, so a slow or failed handshake
    does not hold up other clients."""

    daemon_threads = True
    allow_reuse_address = True

    def finish_request(self, request, client_address):
        request.settimeout(30)
        # Headers and body leave in separate TLS records; without this, Nagle and delayed
        # ACKs add 40 ms to every keep-alive request.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            log("%s TLS handshake failed: %s" % (client_address[0], error))
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def init_state(state_dir):
    """Record DIR/tokens/*.token in state.json (idempotent); used by setup.sh."""
    store = Store(state_dir)
    tokens_dir = os.path.join(state_dir, "tokens")
    for name in sorted(os.listdir(tokens_dir)):
        if not name.endswith(".token"):
            continue
        with open(os.path.join(tokens_dir, name)) as handle:
            value = handle.read().strip()
        description = name[: -len(".token")]
        token = store.add_token(value, description, "setup", setup=True)
        token["setup"] = True
    store.save()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--ping-interval", type=int, default=2,
                        help="seconds between agent pings (job pick-up latency)")
    parser.add_argument("--heartbeat-interval", type=int, default=5)
    parser.add_argument("--lost-after", type=float, default=20.0,
                        help="seconds without heartbeat or ping before an agent is lost")
    parser.add_argument("--init", action="store_true",
                        help="record DIR/tokens/*.token in DIR/state.json and exit")
    args = parser.parse_args()
    if args.init:
        global QUIET
        QUIET = True
        return init_state(args.state_dir)

    try:
        with open(os.path.join(args.state_dir, "api-token")) as handle:
            api_token = handle.read().strip()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(os.path.join(args.state_dir, "server.pem"),
                            os.path.join(args.state_dir, "server.key"))
    except (OSError, ssl.SSLError) as error:
        raise SystemExit("%s: %s (run setup.sh %s first)" % (args.state_dir, error,
                                                             args.state_dir))
    store = Store(args.state_dir, lost_after=args.lost_after)
    family = socket.AF_INET6 if ":" in args.listen else socket.AF_INET
    StandinServer.address_family = family
    server = StandinServer((args.listen, args.port), Handler)
    server.tls, server.store, server.api_token = tls, store, api_token
    server.requests, server.started_at = RequestCounter(), now_iso()
    server.ping_interval, server.heartbeat_interval = args.ping_interval, \
        args.heartbeat_interval

    def reaper():
        while True:
            time.sleep(1)
            try:
                store.reap_lost()
            except Exception as error:  # Keep serving; the next round retries.
                log("reaper: %s" % error)
    threading.Thread(target=reaper, daemon=True).start()
    log("listening on https://%s:%d (state %s)" % (args.listen, args.port, store.path))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        store.save()


if __name__ == "__main__":
    main()
