# The NixOS wiki's Buildkite recipe with token and key under /var/lib/bkfleet/secrets/builder/,
# as evaluated by real NixOS for reference-unit.service. Test input only; not a template.
{ config, pkgs, ... }: {
  services.buildkite-agents.builder = {
    enable = true;
    tokenPath = "/var/lib/bkfleet/secrets/builder/token";
    privateSshKeyPath = "/var/lib/bkfleet/secrets/builder/ssh_key";
    tags = { queue = "nix"; };
    runtimePackages = [ pkgs.gnutar pkgs.bash pkgs.nix pkgs.gzip pkgs.git ];
  };
  systemd.services.buildkite-agent-builder = {
    confinement.enable = true;
    confinement.packages = config.services.buildkite-agents.builder.runtimePackages;
    serviceConfig = {
      BindReadOnlyPaths = [ "/var/lib/bkfleet/secrets/builder/token" "/var/lib/bkfleet/secrets/builder/ssh_key" "${config.environment.etc."ssl/certs/ca-certificates.crt".source}:/etc/ssl/certs/ca-certificates.crt" "/etc/machine-id" "/nix/store" ];
      BindPaths = [ config.services.buildkite-agents.builder.dataDir "/nix/var/nix/daemon-socket/socket" ];
    };
  };
}
