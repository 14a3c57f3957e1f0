# Entry point of the NixOS stand-in's evaluation: evaluates a configuration.nix with its
# imports and prints (with nix-instantiate --eval --strict --json) what nixos-rebuild
# needs to activate it: users, groups, unit files and store paths to create. It builds
# nothing and touches no file; activation is the Python side's job.
{ configPath }:
let
  standinDir = dirOf (toString ./.);
  lib = import ./lib.nix;
  pkgs = import ./pkgs.nix { inherit lib; };
  core = import ./modules.nix { inherit lib pkgs standinDir; };
  optionTree = import ./options.nix {
    inherit lib pkgs standinDir;
    inherit (core) types mkOption mkOptionNoDefault;
  };

  # configPath comes as a string; turn it into a path so relative imports resolve.
  configuration = /. + configPath;

  evaluated = core.evalModules {
    roots = [
      configuration
      ./modules/buildkite-agents.nix
      ./modules/users-groups.nix
      ./modules/pki.nix
    ];
    inherit optionTree;
  };
  inherit (evaluated) config;

  inherit (builtins)
    attrNames concatLists filter isAttrs isFunction isList isPath listToAttrs map mapAttrs
    split toJSON;
  inherit (lib) concatStringsSep concatMap optional optionalAttrs unique;

  # ---- Unit files, rendered the way NixOS renders them. ----

  toOption = x: if x == true then "true" else if x == false then "false" else toString x;

  # Keys sorted, a list gives one line per element, null leaves the key out.
  section = attrs: concatStringsSep "" (concatMap (n:
    let v = attrs.${n};
    in if v == null then [ ]
       else if isList v then map (x: "${n}=${toOption x}\n") v
       else [ "${n}=${toOption v}\n" ]) (attrNames attrs));

  nonEmpty = key: list: optionalAttrs (list != [ ]) { ${key} = concatStringsSep " " list; };

  globalEnvironment = {
    LOCALE_ARCHIVE = "${pkgs.glibcLocales}/lib/locale/locale-archive";
    TZDIR = "${pkgs.tzdata}/share/zoneinfo";
  };

  unitText = name: s:
    let
      unitSection = nonEmpty "After" s.after // nonEmpty "Before" s.before
        // nonEmpty "Wants" s.wants // nonEmpty "Requires" s.requires
        // nonEmpty "Requisite" s.requisite // nonEmpty "BindsTo" s.bindsTo
        // nonEmpty "PartOf" s.partOf // nonEmpty "Conflicts" s.conflicts
        // nonEmpty "OnFailure" s.onFailure // nonEmpty "OnSuccess" s.onSuccess
        // nonEmpty "Upholds" s.upholds // nonEmpty "Documentation" s.documentation
        // optionalAttrs (s.description != "") { Description = s.description; }
        // optionalAttrs (s.startLimitBurst != null) { StartLimitBurst = s.startLimitBurst; }
        // optionalAttrs (s.startLimitIntervalSec != null)
          { StartLimitIntervalSec = s.startLimitIntervalSec; }
        // optionalAttrs (s.restartTriggers != [ ]) {
          X-Restart-Triggers = (pkgs.writeText "X-Restart-Triggers-${name}"
            (toJSON (map toString s.restartTriggers))).outPath;
        }
        // optionalAttrs (s.reloadTriggers != [ ]) {
          X-Reload-Triggers = (pkgs.writeText "X-Reload-Triggers-${name}"
            (toJSON (map toString s.reloadTriggers))).outPath;
        }
        // s.unitConfig;
      env = globalEnvironment // s.environment;
      envLines = concatStringsSep "" (concatMap (n:
        if env.${n} == null then [ ]
        else [ "Environment=${toJSON "${n}=${toString env.${n}}"}\n" ]) (attrNames env));
      flags =
        if s.reloadIfChanged then "X-ReloadIfChanged=true\n"
        else if !s.restartIfChanged then "X-RestartIfChanged=false\n"
        else "";
      stopFlag = if s.stopIfChanged then "" else "X-StopIfChanged=false\n";
      install = nonEmpty "WantedBy" s.wantedBy // nonEmpty "RequiredBy" s.requiredBy
        // nonEmpty "UpheldBy" s.upheldBy
        // nonEmpty "Alias" (map (a: a) s.aliases);
    in "[Unit]\n" + section unitSection
      + "\n[Service]\n" + envLines + flags + stopFlag + section s.serviceConfig
      + (if install == { } then "" else "\n[Install]\n" + section install);

  # ---- Store paths: what the unit refers to, and what activation must create. ----

  storePathsIn = text: unique (concatMap (x: if isList x then x else [ ])
    (split "(/nix/store/[0-9a-z]{32}-[^/ \"':;\n]+)" text));

  fileTexts = drv: concatStringsSep "\n" (map (f: f.text) (builtins.attrValues drv.standinFiles));

  # The drop-in NixOS's confinement module writes (confinement.conf): read-only binds of
  # the unit's closure. Here the closure is Debian's runtime (/usr, /bin, /lib, /lib64,
  # which the stand-in's programs need) plus every store path the unit mentions; a
  # store path that does not exist is skipped ("-").
  confinementDropIn = name: s: text:
    let
      packages = map toString s.confinement.packages;
      closure = unique (storePathsIn (concatStringsSep "\n"
        ([ text ] ++ map fileTexts s.jobScripts ++ packages)));
    in "[Service]\n"
      + concatStringsSep "" (map (p: "BindReadOnlyPaths=${p}\n") [ "/usr" "/bin" "/lib" ])
      + "BindReadOnlyPaths=-/lib64\n"
      + concatStringsSep "" (map (p: "BindReadOnlyPaths=-${p}\n") closure);

  enabledServices = lib.filterAttrs (_: s: s.enable) config.systemd.services;

  units = lib.mapAttrs' (name: s:
    let text = unitText name s;
    in lib.nameValuePair "${name}.service" {
      inherit text;
      dropIns = optionalAttrs s.confinement.enable {
        "confinement.conf" = confinementDropIn name s text;
      };
      inherit (s) wantedBy requiredBy restartIfChanged stopIfChanged reloadIfChanged;
    }) enabledServices;

  enabledAgents = lib.filterAttrs (_: a: a.enable) config.services.buildkite-agents;

  isDrv = lib.isDerivation;
  storeDrvs = filter isDrv (concatLists (
    lib.mapAttrsToList (_: s: s.jobScripts ++ s.path ++ s.confinement.packages)
      enabledServices
    ++ lib.mapAttrsToList (_: a: a.runtimePackages ++ [ a.package a.hooksPath ]) enabledAgents
    ++ lib.mapAttrsToList (_: e: optional (e.enable && isDrv e.source) e.source)
      config.environment.etc
    ++ [ config.environment.systemPackages
         [ pkgs.glibcLocales pkgs.tzdata pkgs.cacert ] ]));

  store = listToAttrs (map (d: lib.nameValuePair d.outPath {
    kind = d.standinKind;
    files = d.standinFiles;
    links = d.standinLinks;
    debian = d.standinDebian;
  }) storeDrvs);

  # ---- The whole configuration, as JSON-able data (forces every definition). ----

  plain = v:
    if isFunction v then "<function>"
    else if isPath v then toString v
    else if isAttrs v then (if isDrv v then v.outPath else mapAttrs (_: plain) v)
    else if isList v then map plain v
    else v;

  output = {
    standin = "nixos-standin";
    formatVersion = 1;
    nixosVersion = "${config.system.stateVersion}.standin";
    hostName = config.networking.hostName;
    mutableUsers = config.users.mutableUsers;
    users = mapAttrs (_: u: {
      inherit (u) name uid group extraGroups home homeMode createHome description
        isSystemUser isNormalUser;
      shell = if u.shell == null then null else toString u.shell;
    }) config.users.users;
    groups = mapAttrs (_: g: { inherit (g) name gid members; }) config.users.groups;
    inherit units store;
    agents = mapAttrs (name: a: {
      unit = "buildkite-agent-${name}.service";
      user = "buildkite-agent-${name}";
      inherit (a) dataDir;
      tokenPath = toString a.tokenPath;
      privateSshKeyPath = a.privateSshKeyPath;
    }) enabledAgents;
    config = plain (config // {
      services = config.services // { buildkite-agents = enabledAgents; };
    });
  };

  failedAssertions = map (a: a.message) (filter (a: !a.assertion) config.assertions);
  withWarnings = lib.foldl' (acc: w: builtins.trace "warning: ${w}" acc) output config.warnings;
in
# Every definition is forced first, so that an unknown option or a wrong type is
# reported before assertions, as NixOS does.
builtins.deepSeq output.config (
if failedAssertions != [ ]
then throw "\nFailed assertions:\n${concatStringsSep "\n" (map (m: "- ${m}") failedAssertions)}"
else withWarnings)
