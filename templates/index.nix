# Managed by bkfleet: the agents this host runs. Import this directory from
# /etc/nixos/configuration.nix (`imports = [ ./bkfleet ];`) or from a flake.
{
  imports = [
@imports@
  ];
}
