# Echo: a service with no data. It shows the smallest useful module: an
# enable option, a bool and an enum, one unit in its own slice.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.selfprivacy.modules.echo;
  port = 8007;
  # socat's address for each mode: echo answers, discard swallows.
  target = {
    echo = "PIPE";
    discard = "OPEN:/dev/null,wronly";
  };
in
{
  options.selfprivacy.modules.echo = {
    enable =
      (lib.mkOption {
        default = false;
        type = lib.types.bool;
        description = "Enable Echo";
      })
      // {
        meta.type = "enable";
      };
    openFirewall =
      (lib.mkOption {
        default = false;
        type = lib.types.bool;
        description = "Reachable from the internet (opens TCP port ${toString port})";
      })
      // {
        meta = {
          type = "bool";
          weight = 1;
        };
      };
    mode =
      (lib.mkOption {
        default = "echo";
        type = lib.types.enum (builtins.attrNames target);
        description = "What to do with what clients send";
      })
      // {
        meta = {
          type = "enum";
          options = builtins.attrNames target;
          weight = 2;
        };
      };
  };

  config = lib.mkIf cfg.enable {
    users.users.echo = {
      isSystemUser = true;
      group = "echo";
    };
    users.groups.echo = { };

    systemd.slices.echo.description = "Echo service slice";

    systemd.services.echo = {
      description = "Echo TCP relay";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        Slice = "echo.slice";
        User = "echo";
        Group = "echo";
        ExecStart = "${pkgs.socat}/bin/socat -T 300 TCP-LISTEN:${toString port},reuseaddr,fork ${target.${cfg.mode}}";
        Restart = "on-failure";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
      };
    };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ port ];
  };
}
