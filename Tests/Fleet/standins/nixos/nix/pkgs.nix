# `pkgs` for the NixOS stand-in: fake derivations whose outPath is a /nix/store path, so
# that modules can write `pkgs.git` or "${pkgs.bash}/bin/bash" as on NixOS. Nothing is
# built: at activation, nixos-rebuild fills each path with symlinks to the Debian
# binaries named in `standinDebian`. An unknown attribute fails as in Nix (missing).
{ lib }:
let
  # Store hashes look like Nix's (32 characters of its base-32 alphabet) and depend
  # only on the name, or on the content for the writers below.
  nix32 = "0123456789abcdfghijklmnpqrsvwxyz";
  hexDigits = [ "0" "1" "2" "3" "4" "5" "6" "7" "8" "9" "a" "b" "c" "d" "e" "f" ];
  toNix32 = hex: lib.concatStrings (builtins.genList (i:
    let
      d = builtins.substring i 1 hex;
      n = lib.head (builtins.filter (k: builtins.elemAt hexDigits k == d)
        (builtins.genList (k: k) 16));
    in builtins.substring (n * 2) 1 nix32) 32);
  storeHash = seed: toNix32 (builtins.hashString "sha256" seed);

  mkDrv = { name, outPath ? "/nix/store/${storeHash "standin-package:${name}"}-${name}"
          , pname ? name, version ? "", standinDebian ? [ ], standinLinks ? { }
          , standinFiles ? { }, standinKind ? "package" }:
    let
      self = {
        type = "derivation";
        inherit name pname version outPath standinDebian standinLinks standinFiles standinKind;
        drvPath = "/nix/store/${storeHash "standin-drv:${outPath}"}-${name}.drv";
        outputs = [ "out" ];
        out = self;
        outputName = "out";
        meta = { };
        system = "x86_64-linux";
      };
    in self;

  pkg = pname: version: debian: mkDrv {
    name = "${pname}-${version}";
    inherit pname version;
    standinDebian = debian;
  };

  # A store path holding files given by text, e.g. a unit's pre-start script.
  # `files` maps a relative path to { text; mode; }.
  storeFiles = name: files: mkDrv {
    inherit name;
    outPath = "/nix/store/${storeHash "standin-files:${name}:${builtins.toJSON files}"}-${name}";
    standinFiles = files;
    standinKind = "files";
  };

  # LIMITATION: the stand-in's scripts use Debian's /bin/bash (bound into confinements)
  # where NixOS would use the store's bash.
  runtimeShell = "/bin/bash";

  writeShellScriptBin = name: text: storeFiles name {
    "bin/${name}" = { text = "#!${runtimeShell}\n${text}"; mode = "0755"; };
  };
in
rec {
  inherit lib runtimeShell;
  system = "x86_64-linux";
  stdenv = { hostPlatform.system = system; isLinux = true; shell = runtimeShell; };

  # The Buildkite agent stand-in, installed at this fixed path by the fleet's buildkite
  # stand-in (bin/buildkite-agent). Pinned: other parts of the fleet rely on it.
  buildkite-agent = mkDrv {
    name = "buildkite-agent-standin";
    pname = "buildkite-agent";
    version = "3.x-standin";
    outPath = "/nix/store/00000000000000000000000000000bk1-buildkite-agent-standin";
  };

  bash = pkg "bash" "5.2p26" [ "bash" ];
  bashInteractive = bash;
  coreutils = pkg "coreutils" "9.5" [ "coreutils" ];
  findutils = pkg "findutils" "4.9.0" [ "findutils" ];
  gnugrep = pkg "gnugrep" "3.11" [ "grep" ];
  gnused = pkg "gnused" "4.9" [ "sed" ];
  gnutar = pkg "gnutar" "1.35" [ "tar" ];
  gawk = pkg "gawk" "5.2.2" [ "gawk" "mawk" ];
  gzip = pkg "gzip" "1.13" [ "gzip" ];
  bzip2 = pkg "bzip2" "1.0.8" [ "bzip2" ];
  xz = pkg "xz" "5.4.6" [ "xz-utils" ];
  zstd = pkg "zstd" "1.5.6" [ "zstd" ];
  git = pkg "git" "2.44.0" [ "git" ];
  nix = pkg "nix" "2.18.2" [ "nix-bin" ];
  openssh = pkg "openssh" "9.7p1" [ "openssh-client" ];
  curl = pkg "curl" "8.7.1" [ "curl" ];
  wget = pkg "wget" "1.21.4" [ "wget" ];
  jq = pkg "jq" "1.7.1" [ "jq" ];
  cachix = pkg "cachix" "1.7.4" [ ];
  gnumake = pkg "gnumake" "4.4.1" [ "make" ];
  which = pkg "which" "2.21" [ "debianutils" ];
  procps = pkg "procps" "4.0.4" [ "procps" ];
  util-linux = pkg "util-linux" "2.39.4" [ "util-linux" ];
  iproute2 = pkg "iproute2" "6.9.0" [ "iproute2" ];
  hostname = pkg "hostname" "3.23" [ "hostname" ];
  less = pkg "less" "643" [ "less" ];
  gnupg = pkg "gnupg" "2.4.5" [ "gnupg" "gpg" ];
  openssl = pkg "openssl" "3.0.14" [ "openssl" ];
  python3 = pkg "python3" "3.11.9" [ "python3.11-minimal" "python3-minimal" ];
  perl = pkg "perl" "5.38.2" [ "perl-base" "perl" ];
  sudo = pkg "sudo" "1.9.15p5" [ "sudo" ];
  shadow = pkg "shadow" "4.14.6" [ "passwd" "login" ];
  systemd = pkg "systemd" "255.4" [ "systemd" ];
  docker = pkg "docker" "24.0.9" [ ];
  cacert = mkDrv {
    name = "nss-cacert-3.98";
    standinLinks."etc/ssl/certs/ca-bundle.crt" = "/etc/ssl/certs/ca-certificates.crt";
  };
  glibcLocales = mkDrv {
    name = "glibc-locales-2.39-5";
    standinLinks = { "lib/locale" = "/usr/lib/locale"; };
  };
  tzdata = mkDrv {
    name = "tzdata-2024a";
    standinLinks = { "share/zoneinfo" = "/usr/share/zoneinfo"; };
  };

  # Writers: their files are materialized in the store when a definition holds the
  # derivation itself (e.g. in `path` or `confinement.packages`).
  # LIMITATION: a writer only interpolated into a string is not materialized.
  writeText = name: text: storeFiles name { "" = { inherit text; mode = "0444"; }; };
  writeScript = name: text: storeFiles name { "" = { inherit text; mode = "0555"; }; };
  writeShellScript = name: text: storeFiles name {
    "" = { text = "#!${runtimeShell}\n${text}"; mode = "0555"; };
  };
  inherit writeShellScriptBin storeFiles storeHash;

  # The hooks directory NixOS builds from services.buildkite-agents.<name>.hooks: one
  # executable per hook. Internal to the stand-in (also used by its assertion).
  _standinBuildkiteHooks = hooks: storeFiles "buildkite-agent-hooks" (lib.mapAttrs (_: text: {
    mode = "0755";
    text = "#!${runtimeShell}\nset -o errexit\nset -o nounset\nset -o pipefail\n\n${text}\n";
  }) hooks);
  writeShellApplication = { name, text, runtimeInputs ? [ ], ... }: storeFiles name {
    "bin/${name}" = {
      text = "#!${runtimeShell}\nset -o errexit\nset -o nounset\nset -o pipefail\n"
        + lib.optionalString (runtimeInputs != [ ])
          "\nexport PATH=\"${lib.makeBinPath runtimeInputs}:$PATH\"\n"
        + "\n${text}\n";
      mode = "0755";
    };
  };
}
