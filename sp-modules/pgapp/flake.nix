{
  description = "PgApp: a REST API over its own PostgreSQL database (SelfPrivacy module example)";

  outputs =
    { self }:
    {
      nixosModules.default = import ./module.nix;
      configPathsNeeded = builtins.fromJSON (builtins.readFile ./config-paths-needed.json);
      meta =
        { lib, ... }:
        {
          spModuleSchemaVersion = 1;
          id = "pgapp";
          name = "PgApp";
          description = "PostgREST serving the `api` schema of its own PostgreSQL database, with a static front end.";
          svgIcon = builtins.readFile ./icon.svg;
          showUrl = true;
          primarySubdomain = "subdomain";
          # Its folders move with `location`; the database itself lives with
          # PostgreSQL.
          isMovable = true;
          isRequired = false;
          canBeBackedUp = true;
          backupDescription = "The pgapp database, its signing secret and the front end's files.";
          systemdServices = [ "pgapp.service" ];
          user = "pgapp";
          group = "pgapp";
          folders = [ "/var/lib/pgapp" ];
          # Served by nginx, so group nginx rather than the service's group.
          ownedFolders = [
            {
              path = "/var/lib/pgapp-static";
              owner = "pgapp";
              group = "nginx";
            }
          ];
          postgreDatabases = [ "pgapp" ];
          license = [ lib.licenses.mit ];
          homepage = "https://postgrest.org";
          sourcePage = "https://github.com/PostgREST/postgrest";
          supportLevel = "community";
        };
    };
}
