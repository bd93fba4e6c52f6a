# sp-testbed placeholder: parses, cannot be built (no nixpkgs here).
{
  description = "SelfPrivacy NixOS configuration (testbed placeholder)";
  inputs = {
    selfprivacy-nixos-config.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes";
    sp-module-echo.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/echo";
    sp-module-notes.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/notes";
  };
  outputs = { self, ... }: { };
}
