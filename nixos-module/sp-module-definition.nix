# The catalogue entry /etc/sp-modules/<id> of one SelfPrivacy module flake.
#
# One expression, two callers, both with nixpkgs' own `lib`:
# - nixos-module/default.nix, on a server;
# - scripts/sp-module-definitions, on a development machine, with the
#   vendored `lib` (../shared/vendor/nixpkgs-lib; there is no nixpkgs here).
#
#   (import ./sp-module-definition.nix { inherit lib; }) flake
#     => { id; definition; text; }
#
# `text` is the file's content, `builtins.toJSON` of
#   { meta = flake.meta { inherit lib; };
#     options.<name> = { name; description; loc; meta; default; };
#     configPathsNeeded = flake.configPathsNeeded or [ ]; }
# with object keys sorted (toJSON sorts them), the format SelfPrivacy's
# generator writes and the daemon parses (src/domain/services/definition.rs).
#
# The options are read as SelfPrivacy's generator reads them: the module
# alone goes through `lib.evalModules` with `_module.check = false`, so
# `imports` are followed (options may live in imported files) and the
# NixOS options its `config` half sets need not be declared. Only the
# declarations under options.selfprivacy.modules.<id> are forced; the
# `config` half is never evaluated.
#
# With `check` (the default) a definition the daemon would refuse fails the
# evaluation instead, with every reason listed and the module named: on a
# server that fails the rebuild before anything is switched.
{
  lib,
  # The modules' `pkgs` argument (null: none, an error if an option
  # declaration uses it).
  pkgs ? null,
  # More module arguments, e.g. SelfPrivacy's `selfprivacy` special argument.
  moduleArgs ? { },
  check ? true,
}:
flake:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    isBool
    isFunction
    isList
    isString
    mapAttrs
    match
    toJSON
    ;

  fail = msg: throw "sp-module definition: ${msg}";

  meta =
    if flake ? meta then
      (if isFunction flake.meta then flake.meta { inherit lib; } else flake.meta)
    else
      fail "the flake has no `meta` output";
  id = meta.id or (fail "`meta` has no `id`");
  where = "module ${toJSON id}";

  module = flake.nixosModules.default or (fail "${where}: the flake has no `nixosModules.default`");

  evaluated = lib.evalModules {
    modules = [
      { _module.check = false; }
      module
    ];
    specialArgs = moduleArgs // lib.optionalAttrs (pkgs != null) { inherit pkgs; };
  };

  declared = evaluated.options.selfprivacy.modules or { };
  declaredIds = attrNames declared;
  declarations =
    if declaredIds == [ id ] then
      declared.${id}
    else
      fail "${where} must declare its options under selfprivacy.modules.${id} only (found: ${
        if declaredIds == [ ] then "none" else concatStringsSep ", " declaredIds
      })";

  options = mapAttrs (
    name: option:
    if lib.isOption option then
      {
        inherit name;
        inherit (option) loc;
        description = option.description or null;
        meta = option.meta or null;
        default = option.default or null;
      }
    else
      fail "${where}: selfprivacy.modules.${id}.${name} is not an option (nested option sets are not supported)"
  ) declarations;

  definition = {
    inherit meta options;
    configPathsNeeded = flake.configPathsNeeded or [ ];
  };

  # What the daemon checks when it loads a definition.
  optionTypes = [
    "enable"
    "location"
    "string"
    "bool"
    "enum"
    "int"
  ];
  supportLevels = [
    "normal"
    "experimental"
    "deprecated"
    "community"
    "unknown"
  ];
  units = meta.systemdServices or null;
  nonEmptyString = v: isString v && v != "";
  optionProblems =
    name:
    let
      m = options.${name}.meta;
      type = m.type or null;
    in
    if m == null then
      [ ]
    else
      filter (x: x != null) [
        (if type == null || elem type optionTypes then null else "option ${name}: unknown meta.type ${toJSON type}")
        (if (m.widget or null) == "subdomain" && (m.regex or null) == null then "option ${name}: a subdomain option needs meta.regex" else null)
        (if type == "enum" && (m.options or [ ]) == [ ] then "option ${name}: an enum option needs meta.options" else null)
      ];
  enable = options.enable or null;
  problems =
    filter (x: x != null) [
      (if isString id && match "[A-Za-z0-9][A-Za-z0-9-]{0,63}" id != null then null else "meta.id ${toJSON id}: use 1 to 64 letters (A-Z, a-z), digits or '-', not starting with '-'")
      (if (meta.spModuleSchemaVersion or null) == 1 then null else "meta.spModuleSchemaVersion must be 1 (found ${toJSON (meta.spModuleSchemaVersion or null)})")
      (if nonEmptyString (meta.name or null) then null else "meta.name (a non-empty string) is missing")
      (if nonEmptyString (meta.description or null) then null else "meta.description (a non-empty string) is missing")
      (if nonEmptyString (meta.svgIcon or null) then null else "meta.svgIcon (the SVG text) is missing")
      (if isList units then null else "meta.systemdServices (a list of unit names) is missing")
      (if (meta.isMovable or false) -> options ? location then null else "meta.isMovable is true but there is no `location` option")
      (
        if !(meta ? supportLevel) then
          "meta.supportLevel is missing (one of ${concatStringsSep ", " supportLevels})"
        else if elem meta.supportLevel supportLevels then
          null
        else
          "meta.supportLevel ${toJSON meta.supportLevel} is not one of ${concatStringsSep ", " supportLevels}"
      )
      (
        if enable == null then
          "there is no `enable` option"
        else if (enable.meta.type or null) == "enable" && isBool enable.default then
          null
        else
          "option enable: needs meta.type \"enable\" and a true/false default"
      )
    ]
    ++ (if isList units then map (u: "meta.systemdServices: ${toJSON u} is not a unit name") (filter (u: !(isString u && match "[^/]+\\.[^/]+" u != null)) units) else [ ])
    ++ builtins.concatMap optionProblems (attrNames options);

  text =
    if check && problems != [ ] then
      fail "${where}:\n  ${concatStringsSep "\n  " problems}"
    else
      toJSON definition;
in
{
  inherit id definition text;
}
