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
          description = "Write and read plain-text notes in the browser, behind a password. The notes are files on the server, on the volume you choose.";
          svgIcon = builtins.readFile ./icon.svg;
          showUrl = true;
          primarySubdomain = "subdomain";
          isMovable = true;
          isRequired = false;
          canBeBackedUp = true;
          backupDescription = "All your notes, and the password that protects them.";
          systemdServices = [ "notes.service" ];
          user = "notes";
          group = "notes";
          folders = [ "/var/lib/notes" ];
          license = [ lib.licenses.agpl3Plus ];
          # The server is Python's standard http.server (notes-server.py).
          homepage = "https://docs.python.org/3/library/http.server.html";
          sourcePage = "https://github.com/python/cpython/blob/main/Lib/http/server.py";
          # Not an official SelfPrivacy module.
          supportLevel = "community";
        };
    };
}
