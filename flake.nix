# selfprivacy-api as SelfPrivacy's NixOS configuration consumes it:
#   inputs.selfprivacy-api.url = "...";
#   inputs.selfprivacy-api.inputs.nixpkgs.follows = "nixpkgs";
#   modules = [ selfprivacy-api.nixosModules.default ];  # the module + the overlay
#   services.selfprivacy-api.enable = true;
# The package needs rustc >= 1.89 (edition 2024, current crates): NixOS
# 25.11 or later.
{
  description = "SelfPrivacy server API daemon (GraphQL for the SelfPrivacy app)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forEachSystem =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f nixpkgs.legacyPackages.${system};
          }) systems
        );
    in
    {
      # pkgs.selfprivacy-api, the default of services.selfprivacy-api.package.
      overlays.default = final: _prev: {
        selfprivacy-api = final.callPackage ./nixos-module/package.nix { };
      };

      nixosModules.default = {
        imports = [ ./nixos-module ];
        nixpkgs.overlays = [ self.overlays.default ];
      };

      packages = forEachSystem (pkgs: rec {
        selfprivacy-api = pkgs.callPackage ./nixos-module/package.nix { };
        default = selfprivacy-api;
      });
    };
}
