{
  description = "Notes: plain-text notes in the browser (SelfPrivacy module example)";

  outputs =
    { self }:
    {
      nixosModules.default = import ./module.nix;
      configPathsNeeded = builtins.fromJSON (builtins.readFile ./config-paths-needed.json);
      meta =
        { lib, ... }:
        {
          spModuleSchemaVersion = 1;
          id = "notes";
          name = "Notes";
          description = "Write and read plain-text notes in the browser. The notes are files on the server, on the volume you choose.";
          svgIcon = builtins.readFile ./icon.svg;
          showUrl = true;
          primarySubdomain = "subdomain";
          isMovable = true;
          isRequired = false;
          canBeBackedUp = true;
          backupDescription = "All your notes.";
          systemdServices = [ "notes.service" ];
          user = "notes";
          group = "notes";
          folders = [ "/var/lib/notes" ];
          license = [ lib.licenses.agpl3Plus ];
          homepage = "https://selfprivacy.org";
          sourcePage = "https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config";
          supportLevel = "normal";
        };
    };
}
