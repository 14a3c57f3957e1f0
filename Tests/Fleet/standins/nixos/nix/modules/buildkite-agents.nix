# What NixOS's buildkite-agents module makes of services.buildkite-agents.<name>: a
# system user and group per agent, and a buildkite-agent-<name> service whose pre-start
# writes the agent's config from tokenPath at run time (the token never enters the
# store). It does not declare the options (see ../options.nix) and adds no features.
{ config, lib, pkgs, ... }:
let
  agents = lib.filterAttrs (_: agent: agent.enable) config.services.buildkite-agents;
  forEachAgent = f: lib.mkMerge (lib.mapAttrsToList f agents);
  unit = name: "buildkite-agent-${name}";

  # tags = { queue = "nix"; os = [ "linux" "nixos" ]; } gives queue=nix,os=linux,os=nixos
  tagList = tags: lib.concatMap (key:
    map (v: "${key}=${v}") (lib.toList tags.${key})) (lib.attrNames tags);

  # The same shell text NixOS generates: the key is copied (mode 600) and the config
  # written through an unquoted here-document, so $(cat TOKENPATH) runs in the unit.
  preStart = agent:
    let sshDir = "${agent.dataDir}/.ssh";
    in lib.optionalString (agent.privateSshKeyPath != null) (lib.concatLines [
      "mkdir -m 0700 -p \"${sshDir}\""
      "install -m600 \"${toString agent.privateSshKeyPath}\" \"${sshDir}/id_rsa\""
    ]) + lib.concatLines [
      "cat > \"${agent.dataDir}/buildkite-agent.cfg\" <<EOF"
      "token=\"$(cat ${toString agent.tokenPath})\""
      "name=\"${agent.name}\""
      "shell=\"${agent.shell}\""
      "tags=\"${lib.concatStringsSep "," (tagList agent.tags)}\""
      "build-path=\"${agent.dataDir}/builds\""
      "hooks-path=\"${toString agent.hooksPath}\""
      agent.extraConfig
      "EOF"
    ];
in
{
  users.users = forEachAgent (name: agent: {
    ${unit name} = {
      name = unit name;
      home = agent.dataDir;
      createHome = true;
      description = "Buildkite agent user";
      extraGroups = agent.extraGroups;
      isSystemUser = true;
      group = unit name;
    };
  });

  users.groups = forEachAgent (name: agent: { ${unit name} = { }; });

  systemd.services = forEachAgent (name: agent: {
    ${unit name} = {
      description = "Buildkite Agent";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      path = agent.runtimePackages ++ [ agent.package pkgs.coreutils ];
      environment = config.networking.proxy.envVars // {
        HOME = agent.dataDir;
        NIX_REMOTE = "daemon";
      };
      preStart = preStart agent;
      serviceConfig = {
        ExecStart = "${agent.package}/bin/buildkite-agent start --config "
          + "${agent.dataDir}/buildkite-agent.cfg";
        User = unit name;
        RestartSec = 5;
        Restart = "on-failure";
        TimeoutSec = 10;
        TimeoutStopSec = "2 min";
        KillMode = "mixed";
      };
    };
  });

  # NixOS refuses hooks together with a hooksPath of one's own.
  assertions = lib.mapAttrsToList (name: agent: {
    assertion = agent.hooks == { }
      || toString agent.hooksPath == toString (pkgs._standinBuildkiteHooks agent.hooks);
    message = "Options `services.buildkite-agents.${name}.hooksPath' and\n"
      + "`services.buildkite-agents.${name}.hooks.<name>' are mutually exclusive.";
  }) agents;
}
