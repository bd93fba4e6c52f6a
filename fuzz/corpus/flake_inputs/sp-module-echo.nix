{
  description = "Echo: a small TCP relay that answers what it is sent (SelfPrivacy module example)";

  outputs =
    { self }:
    {
      nixosModules.default = import ./module.nix;
      configPathsNeeded = builtins.fromJSON (builtins.readFile ./config-paths-needed.json);
      meta =
        { lib, ... }:
        {
          spModuleSchemaVersion = 1;
          id = "echo";
          name = "Echo";
          description = "A tiny relay in the spirit of Syncplay: clients connect over TCP and get back what they send. It keeps no data.";
          svgIcon = builtins.readFile ./icon.svg;
          # No web interface, hence no subdomain and no URL.
          showUrl = false;
          isMovable = false;
          isRequired = false;
          canBeBackedUp = false;
          backupDescription = "Echo keeps no data, there is nothing to back up.";
          systemdServices = [ "echo.service" ];
          user = "echo";
          group = "echo";
          folders = [ ];
          license = [ lib.licenses.mit ];
          # The relay is socat.
          homepage = "http://www.dest-unreach.org/socat/";
          sourcePage = "https://repo.or.cz/socat.git";
          # Not an official SelfPrivacy module.
          supportLevel = "community";
        };
    };
}
