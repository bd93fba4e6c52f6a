# The daemon built from this repository: the default of
# services.selfprivacy-api.package. Call it with `pkgs.callPackage`.
{ lib, rustPlatform }:
let
  root = ../.;
  cargo = (builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"))).package;
in
rustPlatform.buildRustPackage {
  pname = cargo.name;
  inherit (cargo) version;

  # The sources without build output, VCS data or editor leftovers.
  src = lib.cleanSourceWith {
    src = root;
    filter =
      path: type:
      !(type == "directory" && builtins.elem (baseNameOf path) [
        "target"
        "bench"
      ])
      && lib.cleanSourceFilter path type;
  };
  cargoLock.lockFile = root + "/Cargo.lock";

  # The tests need root, systemd-nspawn and a D-Bus system bus (they boot
  # the testbed, see docs/testbed.md): scripts/test runs them in CI, the Nix
  # build sandbox cannot.
  doCheck = false;

  meta = {
    description = "SelfPrivacy server API daemon (GraphQL for the SelfPrivacy app)";
    homepage = "https://selfprivacy.org";
    mainProgram = "selfprivacy-api";
    license = lib.licenses.gpl3Plus; # Cargo.toml: GPL-3.0-or-later
    platforms = lib.platforms.linux;
  };
}
