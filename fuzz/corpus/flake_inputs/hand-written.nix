{
  description = "My server";   # keep this comment

  inputs = {
    selfprivacy-nixos-config.url = "git+https://example.org/config.git?ref=flakes";
    # sp-module-commented.url = "disabled";
    sp-module-gitea = { url = "git+https://example.org/c.git?dir=sp-modules/gitea"; };
    weird = { url = "path:./x"; flake = false; /* } tricky */ };
  };

  outputs = { self, selfprivacy-nixos-config, ... }@inputs: {
    note = ''
      a } brace in ''${an indented} string ''' quote ''\n escape
    '';
    nixosConfigurations = selfprivacy-nixos-config.outputs.make { inherit inputs; s = "${"}"}"; };
  };
}
