# PgApp: a service with a PostgreSQL database. It shows how a module asks
# for a database (ensureDatabases/ensureUsers, declared in meta as
# postgreDatabases so that backups dump it) and orders its unit after
# PostgreSQL.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  sp = config.selfprivacy;
  cfg = sp.modules.pgapp;
  port = 3000;
  subdomainRegex = "[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]";
  # PostgREST signs its tokens with this; made once, kept in the state dir.
  jwtSecret = "/var/lib/pgapp/jwt-secret";
  makeSecret = pkgs.writeShellScript "pgapp-jwt-secret" ''
    set -eu
    umask 077
    if [ ! -s ${jwtSecret} ]; then
      ${pkgs.coreutils}/bin/head -c 48 /dev/urandom | ${pkgs.coreutils}/bin/base64 -w0 > ${jwtSecret}.tmp
      ${pkgs.coreutils}/bin/mv ${jwtSecret}.tmp ${jwtSecret}
    fi
  '';
in
{
  options.selfprivacy.modules.pgapp = {
    enable =
      (lib.mkOption {
        default = false;
        type = lib.types.bool;
        description = "Enable PgApp";
      })
      // {
        meta.type = "enable";
      };
    subdomain =
      (lib.mkOption {
        default = "pgapp";
        type = lib.types.strMatching subdomainRegex;
        description = "Subdomain";
      })
      // {
        meta = {
          widget = "subdomain";
          type = "string";
          regex = subdomainRegex;
          weight = 0;
        };
      };
  };

  config = lib.mkIf cfg.enable {
    services.postgresql = {
      enable = true;
      ensureDatabases = [ "pgapp" ];
      ensureUsers = [
        {
          name = "pgapp";
          ensureDBOwnership = true;
        }
      ];
    };

    users.users.pgapp = {
      isSystemUser = true;
      group = "pgapp";
    };
    users.groups.pgapp = { };

    systemd.tmpfiles.rules = [ "d /var/lib/pgapp-static 0750 pgapp nginx - -" ];

    systemd.slices.pgapp.description = "PgApp service slice";

    systemd.services.pgapp = {
      description = "PgApp (PostgREST)";
      wantedBy = [ "multi-user.target" ];
      # The database must be up; if PostgreSQL stops, so does PgApp.
      after = [
        "network.target"
        "postgresql.service"
      ];
      requires = [ "postgresql.service" ];
      environment = {
        # Peer authentication over the socket: OS user pgapp is role pgapp.
        PGRST_DB_URI = "postgres:///pgapp?host=/run/postgresql";
        PGRST_DB_SCHEMAS = "api";
        PGRST_DB_ANON_ROLE = "pgapp";
        PGRST_JWT_SECRET = "@${jwtSecret}";
        PGRST_SERVER_HOST = "127.0.0.1";
        PGRST_SERVER_PORT = toString port;
      };
      serviceConfig = {
        Slice = "pgapp.slice";
        User = "pgapp";
        Group = "pgapp";
        StateDirectory = "pgapp";
        StateDirectoryMode = "0700";
        ExecStartPre = makeSecret;
        ExecStart = "${pkgs.postgrest}/bin/postgrest";
        Restart = "on-failure";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
      };
    };

    services.nginx.virtualHosts."${cfg.subdomain}.${sp.domain}" = {
      useACMEHost = sp.domain;
      forceSSL = true;
      root = "/var/lib/pgapp-static";
      locations."/api/".proxyPass = "http://127.0.0.1:${toString port}/";
    };
  };
}
