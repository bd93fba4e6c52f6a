# The catalogue entry /etc/sp-modules/<id> of one SelfPrivacy module flake.
#
# One expression, two callers:
# - nixos-module/default.nix, on a server, with the real nixpkgs `lib`;
# - scripts/sp-module-definitions, on a development machine without
#   nixpkgs, with the test shim tests/fixtures/nix-lib-shim.
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
# How the options are read: SelfPrivacy runs `lib.evalModules` on the module
# alone and takes options.selfprivacy.modules.<id>. For a module that
# declares its options directly (every SelfPrivacy module does) that yields
# exactly the declarations: `mkOption { ... } // { meta = ...; }` keeps its
# extra `meta` attribute. So the module function is called here with `lib`
# and placeholders for `config`, `pkgs`, ..., and the declarations are read
# from `options.selfprivacy.modules.<id>` of the attrset it returns. The
# module's `config` half is never evaluated, so nothing needs a real system;
# a declaration that reads `config` or `pkgs` (a default computed from them)
# fails with a message naming the module. `imports` are not followed.
#
# With `check` (the default) a definition the daemon would refuse to load
# fails the evaluation instead, with every reason listed: on a server that
# fails the rebuild before anything is switched.
{
  lib,
  # Passed to the module function as `pkgs` (null: a placeholder that fails
  # when used).
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
    functionArgs
    isAttrs
    isFunction
    isList
    isPath
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

  rawModule = flake.nixosModules.default or (fail "${where}: the flake has no `nixosModules.default`");
  module = if isPath rawModule || isString rawModule then import rawModule else rawModule;

  placeholder =
    name:
    throw "sp-module definition: ${where}: its option declarations use `${name}`, which is not available while they are read";
  available = {
    inherit lib;
    config = placeholder "config";
    options = placeholder "options";
    pkgs = if pkgs == null then placeholder "pkgs" else pkgs;
    modulesPath = placeholder "modulesPath";
  } // moduleArgs;
  # Like nixpkgs: every argument the function names is provided (unknown
  # ones as placeholders); a function without a set pattern gets them all.
  wanted = functionArgs module;
  args =
    if wanted == { } then available else mapAttrs (name: _: available.${name} or (placeholder name)) wanted;
  evaluated = if isFunction module then module args else module;

  declared = evaluated.options.selfprivacy.modules or { };
  declaredIds = attrNames declared;
  declarations =
    if declaredIds == [ id ] then
      declared.${id}
    else
      fail "${where} must declare its options under selfprivacy.modules.${id} only (found: ${
        if declaredIds == [ ] then "none" else concatStringsSep ", " declaredIds
      })";

  isOption = v: isAttrs v && (v._type or null) == "option";
  options = mapAttrs (
    name: option:
    if isOption option then
      {
        inherit name;
        description = option.description or null;
        loc = [
          "selfprivacy"
          "modules"
          id
          name
        ];
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
  problems =
    filter (x: x != null) [
      (if isString id && match "[a-z0-9_][a-z0-9_-]{0,63}" id != null then null else "meta.id ${toJSON id}: use 1 to 64 lowercase letters, digits, '-' or '_', not starting with '-'")
      (if meta ? name then null else "meta.name is missing")
      (if isList units then null else "meta.systemdServices (a list of unit names) is missing")
      (if (meta.isMovable or false) -> options ? location then null else "meta.isMovable is true but there is no `location` option")
      (if elem (meta.supportLevel or "unknown") supportLevels then null else "meta.supportLevel ${toJSON meta.supportLevel} is not one of ${concatStringsSep ", " supportLevels}")
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
