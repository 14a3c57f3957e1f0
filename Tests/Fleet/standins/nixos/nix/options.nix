# Every option the NixOS stand-in knows, with NixOS's types and defaults. The agent,
# confinement and systemd-service options follow options.json (copied from real NixOS);
# the other top-level options are a short list of stand-ins that configuration.nix and
# hardware-configuration.nix commonly set. Anything else is an unknown option.
{ lib, pkgs, types, mkOption, mkOptionNoDefault, standinDir }:
let
  inherit (types)
    str bool int path package lines anything unspecified unitOption listOf attrsOf
    nullOr either oneOf enum submodule;
  inherit (lib) mkIf mkMerge mkDefault mkAfter optional concatStringsSep replaceStrings;

  systemdModuleFile = "${standinDir}/nix/options.nix";

  # ---- services.buildkite-agents.<name> ----

  hooksDir = pkgs._standinBuildkiteHooks;

  agentOptions = name: self: {
    enable = mkOption bool true;
    package = mkOption package pkgs.buildkite-agent;
    dataDir = mkOption str "/var/lib/buildkite-agent-${name}";
    extraGroups = mkOption (listOf str) [ "keys" ];
    runtimePackages = mkOption (listOf package)
      [ pkgs.bash pkgs.gnutar pkgs.gzip pkgs.git pkgs.nix ];
    tokenPath = mkOptionNoDefault path;
    name = mkOption str "%hostname-${name}-%n";
    tags = mkOption (attrsOf (either str (listOf str))) { };
    extraConfig = mkOption lines "";
    privateSshKeyPath = mkOption (nullOr path) null // {
      # As in NixOS: keep a run-time path a string so the key never enters the store.
      apply = v: if v == null then null else toString v;
    };
    hooks = mkOption (attrsOf lines) { };
    hooksPath = mkOption path (hooksDir self.hooks);
    shell = mkOption str "${pkgs.bash}/bin/bash -e -c";
  };

  # ---- systemd.services.<name> ----

  pathSafe = replaceStrings [ "@" ":" "\\" "[" "]" ] [ "-" "-" "-" "" "" ];

  jobScript = scriptName: text: pkgs.storeFiles "unit-script-${scriptName}" {
    "bin/${scriptName}" = { text = "#!${pkgs.runtimeShell}\nset -e\n${text}\n"; mode = "0755"; };
  };
  jobScriptCommand = scriptName: text: "${jobScript scriptName text}/bin/${scriptName}";

  unitList = mkOption (listOf str) [ ];

  serviceOptions = name: self: {
    _module = mkOption anything { };
    after = unitList;
    aliases = unitList;
    before = unitList;
    bindsTo = unitList;
    conflicts = unitList;
    description = mkOption str "";
    documentation = unitList;
    enable = mkOption bool true;
    environment = mkOption (attrsOf (nullOr (oneOf [ str path package ]))) { };
    jobScripts = mkOption (listOf package) [ ];
    name = mkOption str name;
    onFailure = unitList;
    onSuccess = unitList;
    overrideStrategy = mkOption (enum [ "asDropinIfExists" "asDropin" ]) "asDropinIfExists";
    partOf = unitList;
    path = mkOption (listOf (oneOf [ package str ])) [ ];
    postStart = mkOption lines "";
    postStop = mkOption lines "";
    preStart = mkOption lines "";
    preStop = mkOption lines "";
    reload = mkOption lines "";
    reloadIfChanged = mkOption bool false;
    reloadTriggers = mkOption (listOf unspecified) [ ];
    requiredBy = unitList;
    requires = unitList;
    requisite = unitList;
    restartIfChanged = mkOption bool true;
    restartTriggers = mkOption (listOf unspecified) [ ];
    runner = mkOption (nullOr path) null;
    script = mkOption lines "";
    scriptArgs = mkOption str "";
    serviceConfig = mkOption (attrsOf unitOption) { };
    startAt = mkOption (either str (listOf str)) [ ];
    # LIMITATION: NixOS leaves these undefined by default; here they default to null.
    startLimitBurst = mkOption (nullOr int) null;
    startLimitIntervalSec = mkOption (nullOr int) null;
    stopIfChanged = mkOption bool true;
    unitConfig = mkOption (attrsOf unitOption) { };
    upheldBy = unitList;
    upholds = unitList;
    wantedBy = unitList;
    wants = unitList;
    confinement = {
      enable = mkOption bool false;
      packages = mkOption (listOf (either str package)) [ ];
      mode = mkOption (enum [ "full-apivfs" "chroot-only" ]) "full-apivfs";
      binSh = mkOption (nullOr path) "${pkgs.bash}/bin/sh";
      fullUnit = mkOption bool false;
    };
  };

  # What NixOS's systemd and confinement modules define for every service: the job
  # scripts, the default `path`, PATH, and the confinement's serviceConfig.
  serviceDefs = name: self:
    let
      safe = pathSafe name;
      apivfs = mkDefault (self.confinement.mode == "full-apivfs");
      scripts = [
        { opt = "preStart"; suffix = "pre-start"; directive = "ExecStartPre"; list = true; }
        { opt = "script"; suffix = "start"; directive = "ExecStart"; list = false; }
        { opt = "postStart"; suffix = "post-start"; directive = "ExecStartPost"; list = true; }
        { opt = "reload"; suffix = "reload"; directive = "ExecReload"; list = false; }
        { opt = "preStop"; suffix = "pre-stop"; directive = "ExecStop"; list = false; }
        { opt = "postStop"; suffix = "post-stop"; directive = "ExecStopPost"; list = true; }
      ];
      used = builtins.filter (s: self.${s.opt} != "") scripts;
      command = s: jobScriptCommand "${safe}-${s.suffix}" self.${s.opt}
        + lib.optionalString (s.opt == "script" && self.scriptArgs != "") " ${self.scriptArgs}";
    in [ {
      file = systemdModuleFile;
      value = {
        path = mkAfter [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused pkgs.systemd ];
        environment.PATH = concatStringsSep ":"
          (map (p: "${toString p}/bin") self.path ++ map (p: "${toString p}/sbin") self.path);
        jobScripts = map (s: jobScript "${safe}-${s.suffix}" self.${s.opt}) used;
        serviceConfig = mkMerge (map (s: {
          ${s.directive} = if s.list then [ (command s) ] else command s;
        }) used ++ [
          (mkIf self.confinement.enable {
            RootDirectory = "/run/confinement/${safe}";
            RuntimeDirectory = [ "confinement/${safe}" ];
            InaccessiblePaths = [ "-+/run/confinement/${safe}" ];
            ReadOnlyPaths = [ "+/" ];
            PrivateMounts = mkDefault true;
            MountAPIVFS = apivfs;
            PrivateDevices = apivfs;
            PrivateTmp = apivfs;
            PrivateUsers = apivfs;
            ProtectControlGroups = apivfs;
            ProtectKernelModules = apivfs;
            ProtectKernelTunables = apivfs;
          })
        ]);
      };
    } ];

  # ---- users ----

  userOptions = name: self: {
    name = mkOption str name;
    uid = mkOption (nullOr int) null;
    group = mkOption str "";
    extraGroups = mkOption (listOf str) [ ];
    home = mkOption path "/var/empty";
    homeMode = mkOption str "700";
    createHome = mkOption bool false;
    description = mkOption str "";
    isSystemUser = mkOption bool false;
    isNormalUser = mkOption bool false;
    shell = mkOption (nullOr (either package path)) null;
    hashedPassword = mkOption (nullOr str) null;
    packages = mkOption (listOf package) [ ];
    openssh.authorizedKeys.keys = mkOption (listOf str) [ ];
  };

  groupOptions = name: self: {
    name = mkOption str name;
    gid = mkOption (nullOr int) null;
    members = mkOption (listOf str) [ ];
  };

  etcOptions = name: self: {
    enable = mkOption bool true;
    target = mkOption str name;
    text = mkOption (nullOr lines) null;
    source = mkOptionNoDefault path;
    mode = mkOption str "symlink";
    user = mkOption str "+0";
    group = mkOption str "+0";
  };
  etcDefs = name: self: [ {
    file = "${standinDir}/nix/options.nix";
    value.source = mkIf (self.text != null)
      (mkDefault (pkgs.writeText "etc-${baseNameOf name}" self.text));
  } ];

  fileSystemOptions = name: self: {
    device = mkOption (nullOr str) null;
    fsType = mkOption str "auto";
    options = mkOption (listOf str) [ "defaults" ];
  };
in
{
  assertions = mkOption (listOf anything) [ ];
  warnings = mkOption (listOf str) [ ];

  services = {
    buildkite-agents = mkOption (attrsOf (submodule { options = agentOptions; })) { };
    openssh = {
      enable = mkOption bool false;
      settings = mkOption (attrsOf anything) { };
    };
  };

  systemd.services = mkOption
    (attrsOf (submodule { options = serviceOptions; extraDefs = serviceDefs; })) { };

  users = {
    mutableUsers = mkOption bool true;
    users = mkOption (attrsOf (submodule { options = userOptions; })) { };
    groups = mkOption (attrsOf (submodule { options = groupOptions; })) { };
  };

  environment = {
    etc = mkOption (attrsOf (submodule { options = etcOptions; extraDefs = etcDefs; })) { };
    systemPackages = mkOption (listOf package) [ ];
  };

  networking = {
    hostName = mkOption str "nixos";
    domain = mkOption (nullOr str) null;
    firewall.enable = mkOption bool true;
    proxy.envVars = mkOption (attrsOf str) { };
  };

  system.stateVersion = mkOption str "24.05";
  time.timeZone = mkOption (nullOr str) null;
  i18n.defaultLocale = mkOption str "en_US.UTF-8";
  nix.settings = mkOption (attrsOf anything) { };
  nixpkgs.hostPlatform = mkOption anything "x86_64-linux";
  security.sudo.wheelNeedsPassword = mkOption bool true;

  boot = {
    isContainer = mkOption bool false;
    loader.grub.enable = mkOption bool true;
    loader.grub.device = mkOption str "";
    loader.systemd-boot.enable = mkOption bool false;
    initrd.availableKernelModules = mkOption (listOf str) [ ];
    kernelModules = mkOption (listOf str) [ ];
  };
  fileSystems = mkOption (attrsOf (submodule { options = fileSystemOptions; })) { };
  swapDevices = mkOption (listOf anything) [ ];
}
