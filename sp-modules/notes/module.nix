# Notes: a web service whose data lives on a volume. It shows the options a
# movable web service needs (enable, location, subdomain), an int and a
# string option, the bind mount of its data folder and the nginx vhost.
# The server asks for a password (HTTP Basic authentication), generated on
# first start into /var/lib/notes/.password (readable by root and notes:
# `cat` it over SSH), and refuses bodies over maxUploadMb.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  sp = config.selfprivacy;
  cfg = sp.modules.notes;
  port = 8090;
  subdomainRegex = "[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]";
  # SelfPrivacy's rule: a module's slice is its id with `-` -> `_`.
  slice = "notes";
  passwordFile = "/var/lib/notes/.password";
  makePassword = pkgs.writeShellScript "notes-password" ''
    set -eu
    umask 077
    if [ ! -s ${passwordFile} ]; then
      ${pkgs.coreutils}/bin/head -c 18 /dev/urandom | ${pkgs.coreutils}/bin/base64 > ${passwordFile}.tmp
      ${pkgs.coreutils}/bin/mv ${passwordFile}.tmp ${passwordFile}
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
in
{
  options.selfprivacy.modules.notes = {
    enable =
      (lib.mkOption {
        default = false;
        type = lib.types.bool;
        description = "Enable Notes";
      })
      // {
        meta.type = "enable";
      };
    # The volume (its name under /volumes) that holds the notes. No default:
    # the API sets it when the service is first enabled.
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
        default = "notes";
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
    title =
      (lib.mkOption {
        default = "";
        type = lib.types.str;
        description = "Heading shown above the notes (may be empty)";
      })
      // {
        meta = {
          type = "string";
          allowEmpty = true;
          weight = 1;
        };
      };
    maxUploadMb =
      (lib.mkOption {
        default = 16;
        type = lib.types.ints.between 1 1024;
        description = "Largest note that can be saved, in megabytes";
      })
      // {
        meta = {
          type = "int";
          minValue = 1;
          maxValue = 1024;
          weight = 2;
        };
      };
  };

  config = lib.mkIf cfg.enable {
    # The data folder is a bind mount of /volumes/<location>/notes, so that
    # the API can move it to another volume. It must be mounted before the
    # service starts (and the service stops if it goes away).
    fileSystems = lib.mkIf sp.useBinds {
      "/var/lib/notes" = {
        device = "/volumes/${cfg.location}/notes";
        options = [
          "bind"
          "x-systemd.required-by=notes.service"
          "x-systemd.before=notes.service"
        ];
      };
    };

    users.users.notes = {
      isSystemUser = true;
      group = "notes";
    };
    users.groups.notes = { };

    systemd.slices.${slice}.description = "Notes service slice";

    systemd.services.notes = {
      description = "Notes web service";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      unitConfig.RequiresMountsFor = lib.mkIf sp.useBinds "/volumes/${cfg.location}/notes";
      environment = {
        NOTES_DIR = "/var/lib/notes";
        NOTES_PORT = toString port;
        NOTES_TITLE = cfg.title;
        NOTES_MAX_UPLOAD_MB = toString cfg.maxUploadMb;
        NOTES_PASSWORD_FILE = passwordFile;
      };
      serviceConfig = {
        Slice = "${slice}.slice";
        User = "notes";
        Group = "notes";
        # Creates /var/lib/notes (on the bind mount) owned by notes:notes.
        StateDirectory = "notes";
        StateDirectoryMode = "0750";
        ExecStartPre = makePassword;
        ExecStart = "${pkgs.python3}/bin/python3 ${./notes-server.py}";
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
      extraConfig = ''
        client_max_body_size ${toString cfg.maxUploadMb}m;
      ''
      + securityHeaders;
      locations."/".proxyPass = "http://127.0.0.1:${toString port}";
    };
  };
}
