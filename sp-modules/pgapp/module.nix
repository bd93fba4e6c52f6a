# PgApp: a service with a PostgreSQL database. It shows how a module asks
# for a database (ensureDatabases/ensureUsers, declared in meta as
# postgreDatabases so that backups dump it), sets up its roles and schema
# (./setup.sql: anonymous requests may only read), waits for the database
# user to exist, and bind-mounts its folders from the chosen volume.
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
  # SelfPrivacy's rule: a module's slice is its id with `-` -> `_`.
  slice = "pgapp";
  # Every folder of meta.folders and meta.ownedFolders, each a bind mount of
  # /volumes/<location>/<its last path component>.
  folders = [
    "/var/lib/pgapp"
    "/var/lib/pgapp-static"
  ];
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
  # The security headers SelfPrivacy's documentation gives its vhosts.
  securityHeaders = ''
    add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;
    add_header Referrer-Policy "origin-when-cross-origin" always;
    add_header X-Frame-Options "SAMEORIGIN" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header X-XSS-Protection "1; mode=block" always;
    proxy_cookie_path / "/; secure; HttpOnly; SameSite=strict";
  '';
  # NixOS >= 25.11 creates ensureUsers in postgresql-setup.service, after
  # postgresql.service; before that, postgresql.service's own post-start
  # did. Ordering after both works on either (an absent unit is ignored).
  databaseReady = [
    "postgresql.service"
    "postgresql-setup.service"
  ];
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
    # The volume (its name under /volumes) that holds the folders. No
    # default: the API sets it when the service is first enabled.
    location =
      (lib.mkOption {
        type = lib.types.str;
        description = "Data location";
      })
      // {
        meta.type = "location";
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
    fileSystems = lib.mkIf sp.useBinds (
      lib.genAttrs folders (folder: {
        device = "/volumes/${cfg.location}/${baseNameOf folder}";
        options = [
          "bind"
          "x-systemd.required-by=pgapp.service"
          "x-systemd.before=pgapp.service"
        ];
      })
    );

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

    # Served by nginx: group nginx (meta.ownedFolders). Applied after the
    # bind mount is in place (tmpfiles runs after local-fs.target).
    systemd.tmpfiles.rules = [ "d /var/lib/pgapp-static 0750 pgapp nginx - -" ];

    systemd.slices.${slice}.description = "PgApp service slice";

    # The roles and schema PostgREST expects, once the database and its
    # owner exist.
    systemd.services.pgapp-db-setup = {
      description = "PgApp: database roles and schema";
      requires = [ "postgresql.service" ];
      after = databaseReady;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        Slice = "${slice}.slice";
        User = "postgres";
        Group = "postgres";
        ExecStart = "${config.services.postgresql.package}/bin/psql --no-psqlrc --quiet --dbname=pgapp --file=${./setup.sql}";
      };
    };

    systemd.services.pgapp = {
      description = "PgApp (PostgREST)";
      wantedBy = [ "multi-user.target" ];
      # The database must be set up; if PostgreSQL stops, so does PgApp.
      after = [
        "network.target"
        "pgapp-db-setup.service"
      ] ++ databaseReady;
      requires = [
        "postgresql.service"
        "pgapp-db-setup.service"
      ];
      unitConfig.RequiresMountsFor = lib.mkIf sp.useBinds (
        map (folder: "/volumes/${cfg.location}/${baseNameOf folder}") folders
      );
      environment = {
        # Peer authentication over the socket: OS user pgapp is role pgapp,
        # which only switches to pgapp_anon for anonymous requests.
        PGRST_DB_URI = "postgres:///pgapp?host=/run/postgresql";
        PGRST_DB_SCHEMAS = "api";
        PGRST_DB_ANON_ROLE = "pgapp_anon";
        PGRST_JWT_SECRET = "@${jwtSecret}";
        PGRST_SERVER_HOST = "127.0.0.1";
        PGRST_SERVER_PORT = toString port;
      };
      serviceConfig = {
        Slice = "${slice}.slice";
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
      extraConfig = securityHeaders;
      locations."/api/".proxyPass = "http://127.0.0.1:${toString port}/";
    };
  };
}
