# The module evaluator of the NixOS stand-in: collects a configuration's modules (imports,
# paths, directories), merges their definitions against a fixed option tree and reports
# unknown options, wrong types and conflicts in NixOS's words. It deliberately supports no
# option declarations in user modules, no disabledModules and no freeform types.
{ lib, pkgs, standinDir }:
let
  inherit (builtins)
    attrNames concatLists concatStringsSep filter foldl' genList head isAttrs isBool
    isFunction isList isPath isString length listToAttrs map mapAttrs match sort split
    substring tail toJSON tryEval typeOf unsafeGetAttrPos;
  inherit (lib) concatMap mkIf mkOverride mkOrder unique hasPrefix last;

  # ---- Showing option paths and definitions, as NixOS does in its error messages. ----

  showOption = loc: concatStringsSep "." (map (part:
    if match "[a-zA-Z_][a-zA-Z0-9_'-]*" part != null || hasPrefix "[definition " part
      || part == "<name>" || part == "*"
    then part else toJSON part) loc);

  escapeNixString = s: toJSON s;

  # A pretty-printer close to lib.generators.toPretty's multi-line layout. Depth-limited
  # because definitions may refer to `config` or `pkgs`.
  pretty = depth: indent: v:
    let next = indent + "  ";
    in
    if depth > 8 then "<...>"
    else if isString v then escapeNixString v
    else if isPath v then toString v
    else if v == null then "null"
    else if isBool v then (if v then "true" else "false")
    else if isFunction v then "<function>"
    else if isList v then
      (if v == [ ] then "[ ]"
       else "[\n" + concatStringsSep "" (map (x: next + pretty (depth + 1) next x + "\n") v)
         + indent + "]")
    else if isAttrs v then
      (if (v.type or null) == "derivation" then "<derivation ${v.name or "?"}>"
       else if v == { } then "{ }"
       else "{\n" + concatStringsSep "" (map (n:
         next + showOption [ n ] + " = " + pretty (depth + 1) next v.${n} + ";\n")
         (attrNames v)) + indent + "}")
    else toString v;

  # Where a definition was written, shown as Nix shows positions: file:line:column and
  # the source line with a caret (Nix indents our continuation lines itself).
  showPos = def:
    if (def.pos or null) == null then ""
    else
      let
        inherit (def.pos) file line column;
        source = tryEval (builtins.elemAt
          (filter isString (split "\n" (builtins.readFile file))) (line - 1));
        number = toString line;
        pad = n: concatStringsSep "" (genList (_: " ") n);
        gutter = pad (6 - builtins.stringLength number);
      in "\n\nat ${file}:${number}:${toString column}:"
        + lib.optionalString source.success
          ("\n\n${gutter}${number}| ${source.value}\n${pad 6}|${pad column}^");

  # "- In `FILE': VALUE" lines; a value that cannot be printed is left out, as in NixOS.
  showDefs = defs: concatStringsSep "" (map (def:
    let
      shown = tryEval (pretty 0 "" def.value);
      lines = filter (l: !isList l) (split "\n" shown.value);
      firstFive = lib.concatStringsSep "\n    " ((lib.genList (i: builtins.elemAt lines i)
        (if length lines > 5 then 5 else length lines)) ++ lib.optional (length lines > 5) "...");
      result =
        if !shown.success then ""
        else if length lines > 1 then ":\n    " + firstFive
        else ": " + firstFive;
    in "\n- In `${def.file}'${result}") defs);

  prioritySuggestion = "Use `lib.mkForce value` or `lib.mkDefault value` to change the "
    + "priority on any of these definitions.";

  firstPos = defs:
    showPos (head (filter (d: (d.pos or null) != null) defs ++ [ { pos = null; } ]));

  # ---- Definition properties: mkMerge, mkIf, mkOverride, mkOrder. ----

  # Turns one definition value into a list of { value; priority; order } with the
  # properties applied. Three cases: merge (flatten), if (keep or drop), override/order
  # (remember the number); anything else is a plain value.
  discharge = loc: priority: order: v:
    if isAttrs v && v ? _type then
      if v._type == "merge" then concatMap (discharge loc priority order) v.contents
      else if v._type == "if" then
        (if !isBool v.condition
         then throw "mkIf called with a non-Boolean condition (option `${showOption loc}')"
         else if v.condition then discharge loc priority order v.content else [ ])
      else if v._type == "override" then discharge loc v.priority order v.content
      else if v._type == "order" then discharge loc priority v.priority v.content
      else [ { value = v; inherit priority order; } ]
    else [ { value = v; inherit priority order; } ];

  # Merges the definitions of one option of type `type`. Returns { isDefined; value }
  # so that attrsOf/listOf can drop elements whose definitions all vanished (mkIf false).
  mergeDefinitions = loc: type: defs:
    let
      discharged = concatMap (d:
        map (x: d // x) (discharge loc 100 1000 d.value)) defs;
      best = foldl' (a: d: if d.priority < a then d.priority else a) 9999 discharged;
      kept = sort (a: b: a.order < b.order) (filter (d: d.priority == best) discharged);
      checked = map (d:
        if type.check d.value then d
        else throw ("A definition for option `${showOption loc}' is not of type "
          + "`${type.description}'. Definition values:${showDefs [ d ]}${showPos d}")) kept;
    in {
      isDefined = kept != [ ];
      value = type.merge loc checked;
    };

  # ---- Option types, described the way NixOS describes them. ----

  phrase = keep: t: if keep t.descriptionClass then t.description else "(${t.description})";

  mergeEqual = loc: defs:
    if length defs == 1 then (head defs).value
    else (foldl' (first: d:
      if d.value != first.value
      then throw ("The option `${showOption loc}' has conflicting definition values:"
        + showDefs [ first d ] + "\n" + prioritySuggestion + firstPos [ d first ])
      else first) (head defs) (tail defs)).value;

  mergeUnique = loc: defs:
    if length defs == 1 then (head defs).value
    else throw ("The option `${showOption loc}' is defined multiple times while it's "
      + "expected to be unique.\n\nDefinition values:" + showDefs defs + "\n"
      + prioritySuggestion + firstPos defs);

  mkType = attrs: { descriptionClass = "noun"; check = _: true; merge = mergeEqual; } // attrs;

  isStringLike = x: isString x || isPath x || (isAttrs x && x ? outPath);

  applyModuleArgs = args: f:
    let fa = builtins.functionArgs f;
    in if fa == { } then f args
    else f (builtins.intersectAttrs fa args);

  types = rec {
    str = mkType { description = "string"; check = isString; };
    bool = mkType { description = "boolean"; check = isBool; };
    int = mkType { description = "signed integer"; check = builtins.isInt; };
    path = mkType {
      description = "path";
      check = x: isStringLike x && substring 0 1 (toString x) == "/";
    };
    package = mkType {
      description = "package";
      check = x: lib.isDerivation x || (isString x && hasPrefix "/nix/store/" x);
      merge = mergeUnique;
    };
    lines = mkType {
      description = "strings concatenated with \"\\n\"";
      check = isString;
      merge = loc: defs: concatStringsSep "\n" (map (d: d.value) defs);
    };
    anything = mkType { description = "anything"; };
    unspecified = mkType { description = "unspecified value"; };

    # systemd directive values: lists from several definitions concatenate, scalars
    # must agree. Any key and any value are accepted, as in NixOS.
    unitOption = mkType {
      description = "systemd option";
      merge = loc: defs:
        if lib.filter (d: isList d.value) defs != [ ]
        then concatMap (d: lib.toList d.value) defs
        else mergeEqual loc defs;
    };

    listOf = elem: mkType {
      description = "list of ${phrase (c: c == "noun" || c == "composite") elem}";
      descriptionClass = "composite";
      check = isList;
      merge = loc: defs: concatLists (genList (n:
        let d = builtins.elemAt defs n;
        in concatLists (genList (m:
          let
            r = mergeDefinitions
              (loc ++ [ "[definition ${toString (n + 1)}-entry ${toString (m + 1)}]" ])
              elem [ {
                inherit (d) file;
                pos = d.pos or null;
                value = builtins.elemAt d.value m;
              } ];
          in if r.isDefined then [ r.value ] else [ ]) (length d.value))) (length defs));
    };

    attrsOf = elem: mkType {
      description = "attribute set of ${phrase (c: c == "noun" || c == "composite") elem}";
      descriptionClass = "composite";
      check = isAttrs;
      merge = loc: defs:
        let names = unique (concatMap (d: attrNames d.value) defs);
        in listToAttrs (concatMap (n:
          let
            r = mergeDefinitions (loc ++ [ n ]) elem (concatMap (d:
              if d.value ? ${n}
              then [ {
                inherit (d) file;
                pos = unsafeGetAttrPos n d.value;
                value = d.value.${n};
              } ]
              else [ ]) defs);
          in if r.isDefined then [ { name = n; value = r.value; } ] else [ ]) names);
    };

    nullOr = elem: mkType {
      description = "null or ${phrase (c: c == "noun" || c == "conjunction") elem}";
      descriptionClass = "conjunction";
      check = x: x == null || elem.check x;
      merge = loc: defs:
        let nulls = filter (d: d.value == null) defs;
        in if length nulls == length defs then null
        else if nulls == [ ] then elem.merge loc defs
        else throw ("The option `${showOption loc}' is defined both null and not null, in "
          + concatStringsSep ", " (map (d: "`${d.file}'") defs) + ".");
    };

    either = a: b: mkType {
      description = "${phrase (c: c == "noun" || c == "conjunction") a} or "
        + phrase (c: c == "noun" || c == "conjunction" || c == "composite") b;
      descriptionClass = "conjunction";
      check = x: a.check x || b.check x;
      merge = loc: defs:
        if lib.filter (d: !a.check d.value) defs == [ ] then a.merge loc defs
        else if lib.filter (d: !b.check d.value) defs == [ ] then b.merge loc defs
        else mergeEqual loc defs;
    };

    oneOf = ts: foldl' either (head ts) (tail ts);

    enum = values: mkType {
      description = "one of ${concatStringsSep ", " (map (v:
        if isString v then toJSON v else toString v) values)}";
      descriptionClass = if length values < 2 then "noun" else "conjunction";
      check = x: builtins.elem x values;
    };

    # A submodule: `options name self` gives its option tree, `extraDefs name self` the
    # definitions the stand-in itself adds (what NixOS's own modules define), e.g. a
    # service's ExecStartPre from its preStart.
    submodule = { options, extraDefs ? _: _: [ ] }: mkType {
      description = "submodule";
      check = x: isAttrs x || isFunction x;
      merge = loc: defs:
        let
          name = last loc;
          self = evalNode loc (options name self) (map (d:
            if isFunction d.value
            then d // { value = applyModuleArgs
              { inherit name lib pkgs; config = self; } d.value; }
            else d) defs ++ extraDefs name self);
        in self;
    };
  };

  mkOption = type: default: { _type = "option"; inherit type default; };
  mkOptionNoDefault = type: { _type = "option"; inherit type; };

  # ---- The option tree. ----

  # A namespace definition may itself carry properties (mkIf c { ... }): push them down
  # onto each attribute, as NixOS does, so that names are known without forcing `c`.
  pushDown = loc: def: v:
    if isAttrs v && v ? _type then
      if v._type == "merge" then concatMap (pushDown loc def) v.contents
      else if v._type == "if" then
        map (mapAttrs (_: x: mkIf v.condition x)) (pushDown loc def v.content)
      else if v._type == "override" then
        map (mapAttrs (_: x: mkOverride v.priority x)) (pushDown loc def v.content)
      else if v._type == "order" then
        map (mapAttrs (_: x: mkOrder v.priority x)) (pushDown loc def v.content)
      else [ v ]
    else if isAttrs v && (v.type or null) != "derivation" then [ v ]
    else throw ("A definition for option `${showOption loc}' is not of type "
      + "`attribute set of options'. Definition values:${showDefs [ (def // { value = v; }) ]}"
      + showPos def);

  unknownOption = loc: name: def:
    let d = { inherit (def) file; value = def.value.${name};
              pos = unsafeGetAttrPos name def.value; };
    in throw ("The option `${showOption (loc ++ [ name ])}' does not exist. "
      + "Definition values:${showDefs [ d ]}${showPos d}");

  evalOption = loc: opt: defs:
    let
      withDefault = defs ++ lib.optional (opt ? default)
        { file = "${standinDir}/nix/options.nix"; value = lib.mkOptionDefault opt.default; };
      r = mergeDefinitions loc opt.type withDefault;
    in
    if r.isDefined then (opt.apply or (x: x)) r.value
    else throw ("The option `${showOption loc}' was accessed but has no value defined. "
      + "Try setting the option.");

  evalNode = loc: node: defs:
    if (node._type or null) == "option" then evalOption loc node defs
    else
      let
        flat = concatMap (d: map (v: d // { value = v; }) (pushDown loc d d.value)) defs;
        unknown = concatMap (d:
          map (n: unknownOption loc n d) (filter (n: !(node ? ${n})) (attrNames d.value))) flat;
        child = n: concatMap (d:
          if d.value ? ${n}
          then [ { inherit (d) file; pos = unsafeGetAttrPos n d.value; value = d.value.${n}; } ]
          else [ ]) flat;
        result = mapAttrs (n: sub: evalNode (loc ++ [ n ]) sub (child n)) node;
      in if unknown == [ ] then result else head unknown;

  # ---- Collecting modules. ----

  isDirectory = p:
    let base = baseNameOf (toString p);
    in (builtins.readDir (dirOf (toString p))).${base} or null == "directory";

  allowedTopLevel = [ "_file" "key" "imports" "options" "config" "meta" "disabledModules" ];

  # Loads one module (path, function or attrset) into { key; file; imports; config }.
  loadModule = args: fallbackFile: key: m:
    let
      fromPath = isPath m || (isString m && hasPrefix "/" m);
      file =
        if fromPath then (if isDirectory m then "${toString m}/default.nix" else toString m)
        else fallbackFile;
      raw = if fromPath then import m else m;
      applied = if isFunction raw then applyModuleArgs args raw else raw;
      v =
        if isAttrs applied then applied
        else throw ("Module `${file}' is of type ${typeOf applied}, "
          + "expected a function or an attribute set.");
      structured = v ? config || v ? options;
      badAttrs = filter (n: !(builtins.elem n allowedTopLevel)) (attrNames v);
      realFile = v._file or file;
    in {
      key = if fromPath then toString m else v.key or key;
      file = realFile;
      imports = v.imports or [ ];
      config =
        if structured then
          (if badAttrs != [ ]
           then throw ("Module `${realFile}' has an unsupported attribute `${head badAttrs}'. "
             + "This is caused by introducing a top-level `config' or `options' attribute. "
             + "Add configuration attributes immediately on the top level instead, or move "
             + "all of them (namely: ${concatStringsSep " " badAttrs}) into the explicit "
             + "`config' attribute.")
           else if (v.options or { }) != { }
           # LIMITATION: modules cannot declare options; NixOS would accept them.
           then throw ("Module `${realFile}' declares options; the NixOS stand-in of the test "
             + "fleet knows only a fixed set of options and does not support `options'.")
           else v.config or { })
        else removeAttrs v [ "_file" "key" "imports" "meta" "disabledModules" ];
    };

  collectModules = args: roots:
    let
      start = genList (i: loadModule args "<root>" "root-${toString i}" (builtins.elemAt roots i))
        (length roots);
    in builtins.genericClosure {
      startSet = start;
      operator = item: genList (i:
        loadModule args item.file "${item.key}:${toString i}" (builtins.elemAt item.imports i))
        (length item.imports);
    };

  evalModules = { roots, optionTree }:
    let
      args = { inherit lib pkgs config; modulesPath = "${standinDir}/nix/modules";
               options = throw "the NixOS stand-in does not provide `options' to modules"; };
      modules = collectModules args roots;
      config = evalNode [ ] optionTree (map (m: { inherit (m) file; value = m.config; }) modules);
    in { inherit config modules; };
in
{
  inherit types mkOption mkOptionNoDefault evalModules showOption;
}
