# pyinfra's side of the benchmark: the converge bkfleet does for one agent, as pyinfra
# operations (a token file with owner and mode, a templated module file, a unit check).
# It writes under /var/lib/bkfleet-bench/pyinfra/ only; no --diff (that would print the token).
import os

from pyinfra import host
from pyinfra.operations import files, systemd

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = "builder"
USER = f"buildkite-agent-{AGENT}"
ROOT = "/var/lib/bkfleet-bench/pyinfra"

files.directory(name="agent folder", path=f"{ROOT}/{AGENT}", user=USER, mode="700")
files.put(
    name="agent token",
    src=os.environ["BENCH_TOKEN_FILE"],
    dest=f"{ROOT}/{AGENT}/token",
    user=USER,
    mode="400",
)
files.template(
    name="agent module",
    src=os.path.join(HERE, "agent.nix.j2"),
    dest=f"{ROOT}/{AGENT}.nix",
    mode="644",
    tool="pyinfra",
    host_name=host.name,
    agent=AGENT,
    token_path=f"{ROOT}/{AGENT}/token",
    queue="nix",
    extra_config="endpoint=https://agent.buildkite.test/v3",
)
systemd.service(name="agent unit running", service=f"buildkite-agent-{AGENT}.service",
                running=True)
