# NixOS module: services.selfprivacy-api
#
# Deploys the selfprivacy-api daemon (as root: it manages systemd units,
# mounts, volumes and the NixOS configuration), its configuration file, the
# sp-nixos-{rebuild,upgrade,rollback} units it starts, the autobackup timer
# and the service catalogue /etc/sp-modules/<id> generated from the installed
# SelfPrivacy module flakes. Usage:
#
#   imports = [ selfprivacy-api.nixosModules.default ];  # the flake: module + overlay
#   services.selfprivacy-api = {
#     enable = true;
#     spModules = { inherit (inputs) notes pgapp; };  # name = meta.id
#   };
#
# Importing the modules themselves (`nixosModules.default` of each flake) is
# the job of the system configuration, as in SelfPrivacy's: `imports` cannot
# depend on this module's options. Without the flake, import this directory
# and add the flake's overlay (or set `package`).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    types
    ;

  cfg = config.services.selfprivacy-api;
  settings = cfg.settings;
  configFile = "/etc/selfprivacy-api/config.toml";
  settingsFormat = pkgs.formats.toml { };
  # The settings file, checked by the daemon itself at build time: a key it
  # does not know or a malformed value fails the rebuild, not the next start.
  uncheckedConfig = settingsFormat.generate "selfprivacy-api-settings.toml" settings;
  checkedConfig = pkgs.runCommand "selfprivacy-api.toml" { preferLocalBuild = true; } ''
    ${cfg.package}/bin/selfprivacy-api check-config ${uncheckedConfig}
    cp ${uncheckedConfig} "$out"
  '';
  # Capabilities the daemon never uses (nor do the tools it runs: nix via
  # the nix daemon, restic, rclone, rsync, e2fsprogs, util-linux).
  droppedCapabilities = [
    "CAP_SYS_MODULE"
    "CAP_SYS_BOOT"
    "CAP_SYS_PTRACE"
    "CAP_SYS_RAWIO"
    "CAP_SYS_TIME"
    "CAP_SYS_TTY_CONFIG"
    "CAP_SYS_PACCT"
    "CAP_WAKE_ALARM"
    "CAP_BLOCK_SUSPEND"
    "CAP_AUDIT_CONTROL"
    "CAP_AUDIT_READ"
    "CAP_AUDIT_WRITE"
    "CAP_MAC_ADMIN"
    "CAP_MAC_OVERRIDE"
    "CAP_SYSLOG"
    "CAP_LINUX_IMMUTABLE"
    "CAP_BPF"
    "CAP_PERFMON"
    "CAP_NET_ADMIN"
    "CAP_NET_RAW"
    "CAP_MKNOD"
  ];

  # The daemon's own slice (SelfPrivacy's naming: id with `-` -> `_`).
  slice = "selfprivacy_api";

  # The same expression scripts/sp-module-definitions evaluates.
  definitionOf = import ./sp-module-definition.nix {
    inherit lib pkgs;
    moduleArgs = cfg.spModuleArgs;
  };
  definitions = builtins.mapAttrs (_: definitionOf) cfg.spModules;

  etcPath = path: lib.removePrefix "/etc/" path;

  # Environment of every unit that runs nix: proxies and nix's own
  # variables from the system configuration, root's home for nix's caches.
  nixEnvironment =
    config.nix.envVars
    // config.networking.proxy.envVars
    // {
      HOME = "/root";
      NIX_CONFIG = "experimental-features = nix-command flakes";
    };

  rebuildPath = [
    config.nix.package.out
    cfg.nixosRebuildPackage
    pkgs.coreutils
    pkgs.gitMinimal
    pkgs.gnutar
    pkgs.gzip
    pkgs.xz.bin
  ];

  # The rebuild units run nixos-rebuild, which switches to the new system,
  # which may change these very units: they must never be stopped or
  # restarted by the switch they are running.
  rebuildUnit = description: script: {
    inherit description script;
    path = rebuildPath;
    environment = nixEnvironment;
    # switch-to-configuration leaves a changed unit alone (X-RestartIfChanged
    # = false) and does not stop it when it disappears from the new system.
    restartIfChanged = false;
    unitConfig.X-StopOnRemoval = false;
    serviceConfig = {
      Type = "oneshot";
      User = "root";
      WorkingDirectory = settings.nixos_config_dir;
      # If the unit is stopped anyway (shutdown, `systemctl stop`): SIGTERM
      # to nixos-rebuild only, and never SIGKILL what it started, so that a
      # switch-to-configuration in progress is not cut in half.
      KillMode = "mixed";
      SendSIGKILL = false;
      # No start timeout (the oneshot default): the daemon's own rebuild
      # timeout decides when a rebuild is reported as hung.
    };
  };
in
{
  options.services.selfprivacy-api = {
    enable = mkEnableOption "the SelfPrivacy API daemon";

    # pkgs.selfprivacy-api comes from the flake's overlay (overlays.default).
    package = lib.mkPackageOption pkgs "selfprivacy-api" { };

    settings = mkOption {
      description = ''
        Contents of ${configFile}. The daemon refuses keys it does not know
        (see config.rs); environment variables SELFPRIVACY_API_* override
        them.
      '';
      default = { };
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          listen = mkOption {
            type = types.str;
            default = "127.0.0.1:5050";
            description = "Address and port the GraphQL API listens on (nginx proxies to it).";
          };
          state_dir = mkOption {
            type = types.str;
            default = "/var/lib/selfprivacy-api";
            description = "The daemon's state (SQLite: token hashes, jobs). Must be under /var/lib (it is the unit's StateDirectory).";
          };
          userdata_file = mkOption {
            type = types.str;
            default = "/etc/nixos/userdata.json";
            description = "The server's declared configuration, shared with the NixOS configuration.";
          };
          sp_modules_dir = mkOption {
            type = types.str;
            default = "/etc/sp-modules";
            description = "The service catalogue, one JSON definition per module (generated from `spModules`).";
          };
          nixos_config_dir = mkOption {
            type = types.str;
            default = "/etc/nixos";
            description = "The NixOS configuration flake the rebuild units build.";
          };
        };
      };
    };

    logFilter = mkOption {
      type = types.str;
      default = "info";
      example = "info,selfprivacy_api=debug";
      description = "RUST_LOG filter of the daemon (its logs go to the journal).";
    };

    path = mkOption {
      type = types.listOf types.package;
      default = [
        config.nix.package.out
        pkgs.coreutils
        pkgs.e2fsprogs
        pkgs.gitMinimal
        pkgs.rclone
        pkgs.restic
        pkgs.rsync
        pkgs.util-linux
      ];
      defaultText = lib.literalExpression "[ nix coreutils e2fsprogs git rclone restic rsync util-linux ]";
      description = "Programs the daemon runs (nix, restic, resize2fs, lsblk, ...).";
    };

    confineFilesystem = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run the daemon in a private mount namespace with a read-only
        system (ProtectSystem=strict and the paths it writes in
        ReadWritePaths), PrivateTmp, and protected kernel tunables,
        modules, logs and cgroups. On by default: the daemon mounts
        nothing itself (volumes and the bind mounts of service folders are
        fileSystems entries made by the rebuild unit, outside its
        namespace), and mounts made later outside still show inside (the
        namespace is a slave of the host's): a volume mounted from the app
        takes a moved service (tests/integration/storage.rs runs that
        under these settings). Turn it off only for a daemon that must
        mount for itself.
      '';
    };

    spModules = mkOption {
      type = types.attrsOf types.raw;
      default = { };
      example = lib.literalExpression "{ inherit (inputs) notes pgapp; }";
      description = ''
        SelfPrivacy module flakes, by id (the name must equal the flake's
        meta.id). Each gives ''${settings.sp_modules_dir}/<id>, the JSON
        definition the daemon reads, evaluated at build time by
        sp-module-definition.nix; a definition the daemon would refuse
        fails the build.
      '';
    };

    spModuleArgs = mkOption {
      type = types.attrsOf types.raw;
      default = { };
      description = "Extra module arguments given to the modules' functions while their option declarations are read (e.g. SelfPrivacy's `selfprivacy` special argument).";
    };

    suggestedModules = mkOption {
      type = types.listOf types.str;
      default = builtins.attrNames cfg.spModules;
      defaultText = lib.literalExpression "builtins.attrNames config.services.selfprivacy-api.spModules";
      description = "Module ids the app may offer to install: /etc/suggested-sp-modules (a JSON array).";
    };

    rebuildUnits = mkOption {
      type = types.bool;
      default = true;
      description = "Define sp-nixos-rebuild, sp-nixos-upgrade and sp-nixos-rollback. Turn off if the system configuration already defines them.";
    };

    flakeAttr = mkOption {
      type = types.str;
      default = "default";
      description = "The nixosConfigurations attribute of the flake in nixos_config_dir that the rebuild units switch to.";
    };

    nixosRebuildPackage = mkOption {
      type = types.package;
      default = config.system.build.nixos-rebuild;
      defaultText = lib.literalExpression "config.system.build.nixos-rebuild";
      description = "The nixos-rebuild the rebuild units run.";
    };

    autobackup = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          A timer running `selfprivacy-api backup run-due`, which asks the
          running daemon to start the automatic backups that are due (so
          their jobs show in the app) and waits for them. The daemon decides
          what is due from the owner's autobackupPeriod (null: nothing is).
          The timer is Persistent: a check missed while the server was off
          runs at boot, so a missed night is caught up.
        '';
      };
      onCalendar = mkOption {
        type = types.str;
        default = "*:0/5";
        description = "When to check for due backups (systemd.time calendar event); the daemon decides what is due.";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        [
          {
            assertion = lib.hasPrefix "/var/lib/" settings.state_dir;
            message = "services.selfprivacy-api.settings.state_dir must be under /var/lib/ (it is the unit's StateDirectory).";
          }
          {
            assertion = cfg.spModules == { } || lib.hasPrefix "/etc/" settings.sp_modules_dir;
            message = "services.selfprivacy-api.settings.sp_modules_dir must be under /etc/ to be generated from spModules.";
          }
        ]
        ++ lib.mapAttrsToList (name: d: {
          assertion = d.id == name;
          message = "services.selfprivacy-api.spModules.${name}: the flake's meta.id is \"${d.id}\"; the name must be the same.";
        }) definitions;

      environment.etc =
        {
          "selfprivacy-api/config.toml".source = checkedConfig;
          "suggested-sp-modules".text = builtins.toJSON cfg.suggestedModules;
        }
        // lib.mapAttrs' (
          name: d: lib.nameValuePair "${etcPath settings.sp_modules_dir}/${name}" { inherit (d) text; }
        ) definitions;

      # The CLI for the owner (`selfprivacy-api token new --device NAME`);
      # it reads the same /etc/selfprivacy-api/config.toml.
      environment.systemPackages = [ cfg.package ];

      systemd.slices.${slice}.description = "SelfPrivacy API daemon slice";

      systemd.services.selfprivacy-api = {
        description = "SelfPrivacy API daemon";
        wantedBy = [ "multi-user.target" ];
        wants = [
          "network-online.target"
          "nix-daemon.socket"
        ];
        after = [
          "network-online.target"
          "dbus.service"
          "nix-daemon.socket"
        ];
        path = cfg.path;
        environment = nixEnvironment // {
          RUST_LOG = cfg.logFilter;
          # RestrictNamespaces (below) would break a nix that builds by
          # itself (its sandbox needs namespaces): the daemon's nix goes
          # through the nix daemon, which builds outside this unit.
          NIX_REMOTE = "daemon";
        };
        # The file is a symlink into the store: restart when it changes.
        restartTriggers = [ config.environment.etc."selfprivacy-api/config.toml".source ];
        # At most 5 failed starts in 5 minutes, then it stays failed.
        startLimitIntervalSec = 300;
        startLimitBurst = 5;

        serviceConfig = {
          Type = "notify"; # READY=1 once it listens
          NotifyAccess = "main";
          ExecStart = "${cfg.package}/bin/selfprivacy-api serve --config ${configFile}";
          Restart = "on-failure";
          RestartSec = "5s";
          TimeoutStopSec = "30s";

          Slice = "${slice}.slice";

          # Root on purpose: it edits /etc/nixos, starts and stops units over
          # D-Bus, mounts, resizes and chowns service data.
          User = "root";
          Group = "root";
          StateDirectory = lib.removePrefix "/var/lib/" settings.state_dir;
          StateDirectoryMode = "0700";
          RuntimeDirectory = "selfprivacy-api";
          RuntimeDirectoryMode = "0700";
          # Files it creates (userdata.json, the SQLite database, secrets)
          # are private by default; it sets service data modes explicitly.
          UMask = "0077";

          # Protections that need no mount namespace. Children inherit them
          # (nix, restic, rclone, git, rsync, e2fsprogs: none needs W+X
          # memory, realtime scheduling, new namespaces or setuid).
          NoNewPrivileges = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          RestrictRealtime = true;
          # No RestrictSUIDSGID: moving (and restoring) service data must
          # keep setuid/setgid bits (setgid folders are common); with it
          # `cp -a` fails with EPERM on those files (seen in the testbed,
          # tests/integration/storage.rs) and the move is rolled back.
          RestrictNamespaces = true;
          SystemCallArchitectures = "native";
          ProtectHostname = true;
          # Since systemd 253 this no longer implies a device allow-list
          # (before, DeviceAllow=char-rtc shut out /dev/sdX for mount and
          # resize2fs). NixOS has had systemd >= 253 since 23.05.
          ProtectClock = true;
          # D-Bus and local sockets, HTTP(S) for the API and backups, netlink
          # for addresses and routes (the server's IP for DNS records).
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
            "AF_NETLINK"
          ];
          # Filter groups add up: what services need, plus mount/umount for
          # bind mounts of service data. A refused call fails with EPERM
          # instead of killing the daemon.
          SystemCallFilter = [
            "@system-service"
            "@mount"
          ];
          SystemCallErrorNumber = "EPERM";
          # It keeps what a root manager uses (chown, reading and moving any
          # service's files, mount, resize2fs' CAP_SYS_RESOURCE, running
          # tools as service users) and drops what it never does.
          # One line: several CapabilityBoundingSet= lines without `~` would
          # add up (OR) rather than drop.
          CapabilityBoundingSet = "~" + lib.concatStringsSep " " droppedCapabilities;
        }
        // lib.optionalAttrs cfg.confineFilesystem {
          # Each of these puts the daemon in its own mount namespace, whose
          # mounts do not propagate to the host (systemd downgrades
          # propagation to "slave"; checked on systemd 252 in the testbed:
          # a `mount --bind` under PrivateTmp=yes, ProtectKernelTunables=yes,
          # ProtectControlGroups=yes or ProtectSystem=strict is invisible
          # outside, and an unmount inside leaves the host's mount in place).
          PrivateTmp = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          # Read-only /sys/fs/cgroup: it only reads cgroups (slice usage).
          ProtectControlGroups = true;
          # strict would block writing /etc/nixos and moving service data:
          # everything it writes is listed.
          ProtectSystem = "strict";
          ProtectHome = "read-only";
          ReadWritePaths = lib.unique [
            settings.nixos_config_dir
            (dirOf settings.userdata_file)
            "-/etc/selfprivacy" # secrets.json (`-`: may not exist yet)
            "/var/lib" # services' data: moves, backups, restores
            "-/volumes" # `-`: a server with one disk may have none
            "/root" # HOME: nix's and restic's caches
            "-/nix/var/nix" # nix client: gc roots, profiles, daemon socket (`-`: a testbed has none)
          ];
        };
      };
    }

    (mkIf cfg.rebuildUnits {
      systemd.services.sp-nixos-rebuild = rebuildUnit "SelfPrivacy: apply the NixOS configuration" ''
        nixos-rebuild switch --flake .#${cfg.flakeAttr}
      '';
      systemd.services.sp-nixos-upgrade = rebuildUnit "SelfPrivacy: update the configuration's inputs, then apply it" ''
        nix flake update
        nixos-rebuild switch --flake .#${cfg.flakeAttr}
      '';
      systemd.services.sp-nixos-rollback = rebuildUnit "SelfPrivacy: switch back to the previous NixOS generation" ''
        nixos-rebuild switch --rollback
      '';
    })

    # The daemon runs the backups (its jobs, its locks); this unit only asks
    # it to, over the control socket, and reports the outcome in the journal.
    (mkIf cfg.autobackup.enable {
      systemd.services.selfprivacy-api-autobackup = {
        description = "SelfPrivacy: run the automatic backups that are due";
        wants = [ "selfprivacy-api.service" ];
        after = [ "selfprivacy-api.service" ];
        environment.RUST_LOG = cfg.logFilter;
        # A switch must not cut a run short (the daemon would go on, but the
        # outcome would be lost from the journal).
        restartIfChanged = false;
        serviceConfig = {
          Type = "oneshot";
          User = "root";
          UMask = "0077";
          ExecStart = "${cfg.package}/bin/selfprivacy-api backup run-due --config ${configFile}";
          # The client only talks to a local socket.
          PrivateNetwork = true;
          NoNewPrivileges = true;
          RestrictAddressFamilies = [ "AF_UNIX" ];
        };
      };
      systemd.timers.selfprivacy-api-autobackup = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.autobackup.onCalendar;
          Persistent = true;
          RandomizedDelaySec = "30s";
        };
      };
    })
  ]);
}
