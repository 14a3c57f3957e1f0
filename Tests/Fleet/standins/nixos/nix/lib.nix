# The `lib` handed to configuration modules: the few nixpkgs lib functions that NixOS
# configurations commonly use, plus the definition properties (mkIf, mkMerge, mkOverride,
# mkDefault, mkForce, mkOrder, mkBefore, mkAfter). Written from scratch for the test fleet;
# it is not nixpkgs' lib and offers no option declaration (mkOption, types) to modules.
let
  inherit (builtins)
    attrNames attrValues concatLists concatStringsSep elem filter foldl' genList
    isAttrs isBool isFunction isInt isList isPath isString length listToAttrs map
    mapAttrs replaceStrings stringLength substring;

  # Definition properties. They are plain tagged attrsets, as in NixOS, so that the
  # evaluator (modules.nix) can discharge them wherever a definition is merged.
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOrder = priority: content: { _type = "order"; inherit priority content; };

  hasPrefix = pre: s: substring 0 (stringLength pre) s == pre;
  hasSuffix = suf: s:
    let
      ls = stringLength s;
      lf = stringLength suf;
    in lf <= ls && substring (ls - lf) lf s == suf;

  mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
  filterAttrs = pred: set:
    listToAttrs (concatLists (map (n:
      if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (attrNames set)));
  nameValuePair = name: value: { inherit name value; };

  unique = list: foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ] list;

  # Single-quote a word for a POSIX shell; a quote inside becomes '\''.
  escapeShellArg = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";

  recursiveUpdate = lhs: rhs:
    lhs // mapAttrs (n: v:
      if isAttrs v && lhs ? ${n} && isAttrs lhs.${n} then recursiveUpdate lhs.${n} v else v) rhs;

  isDerivation = x: isAttrs x && (x.type or null) == "derivation";
in
rec {
  inherit mkIf mkMerge mkOverride mkOrder;
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  mkOptionDefault = mkOverride 1500;
  mkVMOverride = mkOverride 10;
  mkBefore = mkOrder 500;
  mkAfter = mkOrder 1500;

  inherit (builtins)
    attrNames attrValues concatLists concatStringsSep elem elemAt filter foldl' genList
    hasAttr head tail isAttrs isBool isFunction isInt isList isPath isString length
    listToAttrs mapAttrs removeAttrs replaceStrings stringLength substring toJSON;
  inherit hasPrefix hasSuffix mapAttrsToList filterAttrs nameValuePair unique
    escapeShellArg recursiveUpdate isDerivation;

  id = x: x;
  const = x: _: x;
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  optionalAttrs = cond: set: if cond then set else { };
  concatMap = f: list: concatLists (map f list);
  concatStrings = concatStringsSep "";
  concatMapStrings = f: list: concatStringsSep "" (map f list);
  concatMapStringsSep = sep: f: list: concatStringsSep sep (map f list);
  concatLines = list: concatStringsSep "" (map (l: l + "\n") list);
  toList = x: if isList x then x else [ x ];
  flatten = x: if isList x then concatLists (map flatten x) else [ x ];
  last = list: builtins.elemAt list (length list - 1);
  genAttrs = names: f: listToAttrs (map (n: nameValuePair n (f n)) names);
  mapAttrs' = f: set: listToAttrs (map (n: f n set.${n}) (attrNames set));
  attrByPath = path: default: set:
    if path == [ ] then set
    else if isAttrs set && set ? ${builtins.head path}
    then attrByPath (builtins.tail path) default set.${builtins.head path}
    else default;
  removePrefix = pre: s:
    if hasPrefix pre s then substring (stringLength pre) (stringLength s) s else s;
  removeSuffix = suf: s:
    if hasSuffix suf s then substring 0 (stringLength s - stringLength suf) s else s;
  escapeShellArgs = list: concatStringsSep " " (map escapeShellArg list);
  makeBinPath = pkgs: concatStringsSep ":" (map (p: "${toString p}/bin") pkgs);
  mkEnableOption = _: throw "lib.mkEnableOption: the NixOS stand-in cannot declare options";
  mkOption = _: throw "lib.mkOption: the NixOS stand-in cannot declare options";
  versionAtLeast = a: b: builtins.compareVersions a b >= 0;
  trivial.release = "24.05";
  version = "24.05.standin";
}
