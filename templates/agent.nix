# Managed by bkfleet: the next `bkfleet apply` overwrites any edit made here.
# Buildkite agent @agent@, run inside a systemd confinement as in the NixOS wiki recipe.
# Only file paths reach this file: token and key stay outside the Nix store.
{ config, pkgs, ... }:
let
  agent = config.services.buildkite-agents.@agentAttr@;
  tokenPath = @tokenPath@;
  sshKeyPath = @sshKeyPath@;
  confined = @confinement@;
in
{
  services.buildkite-agents.@agentAttr@ = {
    enable = true;
    inherit tokenPath;
    privateSshKeyPath = sshKeyPath;
    tags = @tags@;
    runtimePackages = @runtimePackages@;
    extraConfig = @extraConfig@;
    hooks = @hooks@;
    package = @package@;
@nameSetting@  };

  systemd.services = if !confined then { } else {
    @unitAttr@ = {
      confinement.enable = true;
      confinement.packages = agent.runtimePackages;
@unitEnvironment@      serviceConfig = {
        BindReadOnlyPaths = [
          tokenPath
        ] ++ (if sshKeyPath == null then [ ] else [ sshKeyPath ]) ++ [
          "${config.environment.etc."ssl/certs/ca-certificates.crt".source}:/etc/ssl/certs/ca-certificates.crt"
          "/etc/machine-id"
          # The wiki recipe stops here; without these the confined agent cannot resolve
          # the Buildkite endpoint. A leading "-" skips a file the host lacks.
          "-/etc/hosts"
          "-/etc/nsswitch.conf"
          "-/etc/resolv.conf"
          # Store paths are dynamic (channels, runtime packages): bind the whole store.
          "/nix/store"
        ];
        BindPaths = [
          agent.dataDir
          "/nix/var/nix/daemon-socket/socket"
        ];
      };
    };
  };
}
